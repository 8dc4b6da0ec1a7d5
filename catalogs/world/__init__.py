"""The synthetic demo world: ground truth first, images second."""
