"""Stages: thin functions that read artifacts, call curation logic, and write artifacts."""
