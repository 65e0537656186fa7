"""`python -m pipeline browse`: a local web app over the dataset (query list, curation, shards).

Modules:

  index   the DuckDB tables built once at start-up (per-query images, counts and outcomes,
          captions, failures), so each page is a range lookup; what still scans is listed there
  server  the HTTP server (stdlib, 127.0.0.1 only) and its routes; images come from the tars
          through `pipeline.audit.tars.ShardImages` (one byte-range read each)
  pages   the HTML, in the reports' page shell (`pipeline.page`); no scripts
  cli     the thin command line (heavy imports only after parsing)
"""
