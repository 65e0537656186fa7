"""Input expansion and atomic output, shared by every stage.

Inputs may be local paths, globs or fsspec URLs; outputs are written under a temporary
name and renamed when complete, so an interrupted run never leaves a file that looks done.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import fsspec

from .errors import InputError


def expand_inputs(patterns: list[str] | str, what: str = "input") -> list[str]:
    """Expand paths/globs/URLs into a sorted, de-duplicated list of files (fsspec URLs kept)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    found: list[str] = []
    for pattern in patterns:
        fs, _, paths = fsspec.get_fs_token_paths(pattern)
        paths = [p for p in paths if fs.isfile(p)] if paths else []
        if not paths:
            raise InputError(f"{pattern}: no {what} file matches this path")
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        for p in sorted(paths):
            url = p if protocol == "file" else f"{protocol}://{p}"
            if url not in found:
                found.append(url)
    return found


def file_size(url: str) -> int:
    fs, path = fsspec.core.url_to_fs(url)
    return int(fs.size(path) or 0)


def file_fingerprint(url: str) -> dict:
    """Enough to notice that an input changed between a run and its resumption."""
    fs, path = fsspec.core.url_to_fs(url)
    info = fs.info(path)
    # local files have an mtime; object stores a LastModified time and an ETag instead
    changed = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or ""
    return {
        "path": url,
        "size": int(info.get("size") or 0),
        "mtime": str(changed),
        **({"etag": str(info["ETag"])} if info.get("ETag") else {}),
    }


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary local path; it becomes `path` only if the block succeeds.

    Local: a sibling renamed into place. Remote (a URL, see `storage`): a local temporary
    file uploaded once, under the final key; an object store shows an object only when its
    upload (single or multipart) completes, so a reader never sees half a file, and an
    extra copy from a temporary key would only double the traffic.
    """
    from .storage import publish, scratch_for

    tmp = scratch_for(path)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path, data: dict) -> None:
    """`data` as indented JSON with sorted keys (stable bytes for the same content), through
    `atomic_path`: stats files, evaluation results."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def sql_str(value: str | Path) -> str:
    """A SQL string literal (paths may hold quotes)."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_file_list(paths: list[Path] | list[str]) -> str:
    """A DuckDB list of file literals: unlike a glob string, brackets or '*' in a path stay literal."""
    return "[" + ", ".join(sql_str(p) for p in paths) + "]"


def sum_stats(paths) -> dict:
    """Sum the numeric fields of per-part stats files (the parts' own `.json` markers)."""
    from .storage import location

    totals: dict = {}
    for path in sorted((location(p) for p in paths), key=str):
        for k, v in json.loads(path.read_text()).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                totals[k] = totals.get(k, 0) + v
    return totals
