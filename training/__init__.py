"""Pre-training from the corpus: the reader, the A²-MAE model, masking, the trainer, the probe.

Depends on nothing of terracorpus but the corpus format (docs/corpus-format.md)."""
