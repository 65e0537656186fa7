"""Where the audit's inputs and outputs live: a local folder or an fsspec URL (s3://, gs://, ...).

A dataset written to object storage is audited where it lies. Paths come from
`pipeline.storage` (pathlib for local paths, universal_pathlib for URLs), and DuckDB reads
remote files through the same fsspec filesystems (`duck.connect(remote=...)`, which calls
`storage.register_duckdb`), never through its httpfs extension, which would be downloaded
at run time.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..io import atomic_path
from ..storage import check_readable, is_remote, location

Location = Path  # a pathlib.Path, or a UPath (same API) for an fsspec URL

__all__ = ["Location", "check_readable", "locate", "output_location", "write_outputs"]


def locate(where, what: str = "") -> Location:
    return location(where, what)


def output_location(shards, out) -> Location:
    """`--out`, or SHARDS/audit on the same store as the shards."""
    return locate(out, "--out") if out is not None else locate(shards, "--shards") / "audit"


def write_outputs(out: Location, files: dict[str, str]) -> None:
    """Write each file completely or not at all (locally renamed into place, on object storage
    one upload per file: an object appears only once its upload succeeded)."""
    if not is_remote(out):
        out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        try:
            with atomic_path(out / name) as tmp:
                tmp.write_text(text, encoding="utf-8")
        except OSError as e:
            raise InputError(f"cannot write {out / name} ({type(e).__name__}: {str(e).strip()[:200]})") from None
        except Exception as e:  # noqa: BLE001 - botocore's errors are not OSErrors
            raise InputError(f"cannot write {out / name} ({type(e).__name__})") from None
