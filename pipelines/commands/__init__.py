"""CLI sub-commands, one module per area; each registers on :data:`terracorpus.pipelines.cli.main`."""
