"""Running it: config, Dask clusters, stages, pixel I/O, the corpus writer, the CLI."""
