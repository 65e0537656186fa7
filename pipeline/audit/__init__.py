"""`python -m pipeline audit`: what the query list, the curation and the shards contain.

Everything is aggregated by DuckDB over the parquet files (out of core, under a memory
limit); only small results (counts, top-k lists, fixed-bin histograms, rank-frequency
curves sampled on a log grid) reach Python. Modules:

  views    DuckDB views over the files (`queries`, `pool`, `matches`, `entry_counts`,
           `selected`, `samples`) and the steps' `_stats.json` accounting
  figures  every number of the report, as one nested dict (summary.json)
  report   report.html (self-contained; charts from `pipeline.plots`, page shell from
           `pipeline.page`), report.md, summary.json
  lookup   `--query WORD` and `--sql` for interactive use
  location local paths or fsspec URLs (s3://...): inputs read and reports written where they lie
  cli      the thin command line
"""


def build_audit(*args, **kwargs):
    """See `pipeline.audit.report.build_audit` (imported lazily: `--help` stays fast)."""
    from .report import build_audit as _build

    return _build(*args, **kwargs)


__all__ = ["build_audit"]
