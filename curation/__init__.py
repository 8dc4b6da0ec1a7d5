"""The decisions, as functions of data: groups, chips, quality, descriptors, affinity propagation, selection."""
