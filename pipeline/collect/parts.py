"""Where the curation folders keep each part's stats: `_stats/part-NNNNN.json`.

`curation/pool`, `matches` and `selected` are parquet datasets: pandas
(`pd.read_parquet(folder)`), pyarrow (`pyarrow.dataset.dataset(folder)`) and DuckDB
(`folder/*.parquet`) open each as a whole. The first two try every file of the folder as
parquet except names starting with `_` or `.` (files and subfolders alike), so nothing
else may sit at the top: a part's stats (its done marker) live in the `_stats/`
subfolder, as the matches' per-part counts live in `_counts/`.

Folders written before this layout had `part-NNNNN.json` beside the parts;
`adopt_old_layout` moves them into `_stats/` so a rerun still finds those parts done
instead of redoing them.
"""

from __future__ import annotations

import os

from ..io import atomic_path
from ..storage import is_remote, location

STATS_DIR = "_stats"


def stats_path(folder, name: str):
    """The stats file (done marker) of part `name` (e.g. ``part-00003``) in `folder`."""
    return location(folder) / STATS_DIR / f"{name}.json"


def adopt_old_layout(folder) -> int:
    """Move old-layout part stats (`part-*.json` beside the parts) into `_stats/`; returns
    how many. A file already in `_stats/` wins (a move cut short on object storage, where
    it is a copy then a delete, leaves both)."""
    folder = location(folder)
    if not folder.is_dir():
        return 0
    moved = 0
    for old in sorted(folder.glob("part-*.json"), key=str):
        new = stats_path(folder, old.stem)
        if not new.exists():
            if is_remote(folder):
                with atomic_path(new) as tmp:
                    tmp.write_bytes(old.read_bytes())
            else:
                new.parent.mkdir(parents=True, exist_ok=True)
                os.replace(old, new)
        if old.exists():
            old.unlink()
        moved += 1
    return moved
