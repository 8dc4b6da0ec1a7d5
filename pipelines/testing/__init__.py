"""Scaffolding for tests and benchmarks; nothing in the runtime imports it.

- :mod:`.httpserve`: a loopback HTTP file server with byte ranges, counters and injected
  failures (what GDAL's ``/vsicurl/`` reads in tests and benchmarks);
- :mod:`.corpora`: small made-up corpora as in-memory arrays, for the corpus writer.
"""
