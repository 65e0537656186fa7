"""Where the stages' outputs lie: one spelling of every file and folder name they pass on.

docs/ARCHITECTURE.md §2 says what each file holds. Names in capitals below are constants
of this module; the functions build the paths.

The query list folder (`queries --out`, default `query_lists/`): `QUERIES`
(queries.parquet), `QUERIES_TXT` (queries.txt) and `BUILD` (build.json).

The shard folder (`shards --out`): per shard `NNNNN.tar`, `NNNNN.parquet`, `NNNNN.tar.idx`
(its samples' byte ranges: `pipeline.shard_format`) and `NNNNN_stats.json` (img2dataset's
counts, its done marker: `SHARD_STATS_GLOB`), and `curation/` (`curation`):

    keys/STEP, keys/STEP.done          `key_file` (STEP: one of `STEPS`)
    STEP_stats.json                    `step_stats`
    pool/part-NNNNN.parquet            `POOL`; pool/_stats.json (`folder_stats`)
    matches/part-NNNNN.parquet         `MATCHES`; matches/_counts/ (`part_counts`)
    entry_counts.parquet               `ENTRY_COUNTS`
    selected/part-NNNNN.parquet        `SELECTED`
    pool|matches|selected/_stats/      `part_stats`: each part's stats, its done marker
    download.log                       `DOWNLOAD_LOG`

`curation/pool`, `matches` and `selected` are parquet datasets: pandas
(`pd.read_parquet(folder)`), pyarrow (`pyarrow.dataset.dataset(folder)`) and DuckDB
(`folder/*.parquet`) open each as a whole. The first two try every file of the folder as
parquet except names starting with `_` or `.` (files and subfolders alike), so nothing
else may sit at the top: a part's stats (its done marker) live in the `_stats/`
subfolder, as the matches' per-part counts live in `_counts/`.
"""

from __future__ import annotations

from .storage import location

# The query list folder. (The folders' default places, query_lists/ and shards/, are
# defaults of the CLIs' settings: `ShardParams` in collect/config.py, and queries/cli.py.)
QUERIES = "queries.parquet"
QUERIES_TXT = "queries.txt"
BUILD = "build.json"

# The shard folder and its curation/ folder.
STATS = "_stats"  # STEP_stats.json, NNNNN_stats.json, pool/_stats.json and the _stats/ folders
STATS_JSON = f"{STATS}.json"
SHARD_STATS_GLOB = f"[0-9]*{STATS_JSON}"  # every shard's NNNNN_stats.json
CURATION = "curation"
STEPS = ("pool", "match", "balance", "download")  # the collection steps, in order
KEYS = "keys"
POOL = "pool"
MATCHES = "matches"
SELECTED = "selected"
ENTRY_COUNTS = "entry_counts.parquet"
# in selected/: no step writes it (the balance step's key holds its settings); the audit
# reads the cap from it where a folder has one, else from balance_stats.json
COUNTS = "_counts"  # in matches/: per part, (query_id, count) of its matches
DOWNLOAD_LOG = "download.log"
PART_GLOB = "part-*.parquet"  # the parts of pool/, matches/ and selected/


def curation(out):
    """The curation folder of the shard folder `out`."""
    return location(out) / CURATION


def key_file(curation_dir, step: str):
    """The key of `step` (its `.done` sibling is written once the step succeeded)."""
    return location(curation_dir) / KEYS / step


def step_stats_name(step: str) -> str:
    """`STEP_stats.json`, the name of a step's totals in the curation folder."""
    return f"{step}{STATS_JSON}"


def step_stats(curation_dir, step: str):
    """`curation/STEP_stats.json`: the totals of one collection step."""
    return location(curation_dir) / step_stats_name(step)


def folder_stats(folder):
    """`FOLDER/_stats.json`: a folder's own stats (the pool's, written last: it is complete)."""
    return location(folder) / STATS_JSON


def part_stats(folder, name: str):
    """The stats file (done marker) of part `name` (e.g. ``part-00003``) in `folder`."""
    return location(folder) / STATS / f"{name}.json"


def part_counts(folder, name: str):
    """The per-query counts of match part `name` in `folder`."""
    return location(folder) / COUNTS / f"{name}.parquet"
