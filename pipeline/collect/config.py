"""The collection steps' settings, each default in one place.

Each step's settings are a frozen dataclass whose field defaults are the defaults: the CLI
(`collect/cli.py`) reads them for its options and `--help`, `ShardParams` bundles one
config per step with what the run works on (folders, inputs, engine), and the step
functions (`build_pool`, `match_pool`, `balance`, `download`) take the config and have no
defaults of their own. A field the CLI offers has the option's name (`keep_cols` is
`--keep-col`, repeatable); the rest (`max_text_chars`, `buckets`, `allowed_addresses`,
`disallowed_header_directives`) are for library callers and tests.

This module imports nothing heavy, so `--help` stays fast.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace

from ..distribute import Engine
from ..errors import InputError
from ..imaging import MAX_IMAGE_PIXELS
from ..options import MEMORY_LIMIT
from ..workers import default_workers


@dataclass(frozen=True)
class PoolConfig:
    """How the pool step reads, filters and splits its inputs (`pool.build_pool`)."""

    url_col: str = "url"
    text_col: str = "caption"
    keep_cols: tuple[str, ...] = ()
    uid_col: str | None = None  # the source's own uid, kept as the sample uid end to end
    uid_hex_digits: int = 0  # with uid_col: the digits every uid must have (DataComp: 32), 0 for any string
    allow_private_hosts: bool = False
    rows_per_part: int = 1_000_000
    memory_limit: str = MEMORY_LIMIT  # bounds each dedup bucket task
    # a caption is cut here: far beyond CLIP's 77 tokens, enough for any real caption
    max_text_chars: int = 4096
    buckets: int | None = None  # dedup bucket tasks; None: enough for memory_limit


# `--pool-format`: the column layouts of pools researchers have. Each sets the url, text and
# uid columns and the extra columns carried into the curation parquet (explicit options win).
POOL_FORMATS: dict[str, dict] = {
    # DataComp's CommonPool metadata: 32-hex-digit uids, CLIP scores, original sizes, sha256
    "datacomp": {
        "url_col": "url",
        "text_col": "text",
        "uid_col": "uid",
        "uid_hex_digits": 32,
        "keep_cols": (
            "original_width",
            "original_height",
            "sha256",
            "clip_b32_similarity_score",
            "clip_l14_similarity_score",
        ),
    },
    # LAION-400M / LAION-2B parquet: no uid (ours is made from url and text)
    "laion": {"url_col": "URL", "text_col": "TEXT", "keep_cols": ("WIDTH", "HEIGHT", "similarity")},
    # img2dataset's own output parquet (a download someone already did)
    "img2dataset": {"url_col": "url", "text_col": "caption", "keep_cols": ("key", "sha256")},
}


@dataclass(frozen=True)
class MatchConfig:
    """Which rule finds the queries in a text (`match.match_pool`)."""

    ignore_case: bool = False
    recipe: str = "clip"


@dataclass(frozen=True)
class BalanceConfig:
    """The cap per query and the seed of the keep/drop draws (`balance.balance`)."""

    per_query: int = 20_000  # CLIP's; worldwide: the reference language's t
    seed: int = 0
    # worldwide: the language whose t is per_query; the others get equal-tail-share t's
    reference_lang: str = "en"
    # offline: balance here, download what is kept (CLIP's, MetaCLIP's); online: download
    # every matched pair (at most online_cap x t per query when given), balance while training
    mode: str = "offline"
    online_cap: float | None = None

    def check(self) -> None:
        """Refuse options that do not go together, before any step runs."""
        if self.mode not in BALANCE_MODES:
            raise InputError(f"unknown balance mode {self.mode!r} (choose from {', '.join(BALANCE_MODES)})")
        if self.online_cap is not None:
            if self.mode != "online":
                raise InputError("--online-cap applies to --balance online only")
            if not self.online_cap >= 1:
                raise InputError(f"--online-cap must be at least 1 (a multiple of t), got {self.online_cap}")


BALANCE_MODES = ("offline", "online")


@dataclass(frozen=True)
class DownloadConfig:
    """How img2dataset fetches and writes the shards, and what a download may do (`download.download`)."""

    image_size: int = 256
    processes: int = field(default_factory=default_workers)
    threads: int = 32
    samples_per_shard: int = 10_000
    timeout: int = 10  # seconds per socket read
    retries: int = 0
    download_deadline: float | None = 30.0  # seconds per download in all; None: no deadline
    max_bytes: int | None = 50_000_000  # largest body; None: no cap
    max_image_pixels: int = MAX_IMAGE_PIXELS
    allow_private_hosts: bool = False
    # "IP:PORT" addresses the host policy lets through although not public: for tests, where
    # a loopback server plays a public one
    allowed_addresses: tuple[str, ...] = ()
    disallowed_header_directives: tuple[str, ...] | None = None  # None: img2dataset's opt-out list


@dataclass
class ShardParams:
    """One run of the collection steps: what they work on, and each step's config."""

    out: str = "shards"
    queries: str = "query_lists/queries.parquet"
    inputs: tuple[str, ...] = ()  # pool inputs (--pool): paths, globs, URLs
    pool: PoolConfig = field(default_factory=PoolConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    engine: Engine = field(default_factory=lambda: Engine(workers=default_workers()))
    quiet: bool = False
    # pool input (path or glob) -> {"license": Hugging Face license id, "name", "note"}: what
    # is known of a source's rights, recorded in pool_stats.json for the dataset card. It
    # changes no data, so it stays out of the step keys.
    licenses: dict[str, dict] = field(default_factory=dict)

    def distributor(self) -> Engine:
        """The engine, with the pixel limit in every Ray worker's environment (OpenCV reads it at import)."""
        return replace(self.engine, env=(("OPENCV_IO_MAX_IMAGE_PIXELS", str(self.download.max_image_pixels)),))


def default(config: type, name: str):
    """The default of field `name` of the dataclass `config` (its factory called)."""
    for f in fields(config):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            raise TypeError(f"{config.__name__}.{name} has no default")
    raise TypeError(f"{config.__name__} has no field {name!r}")


def from_options(config: type, options: dict):
    """A `config` from parsed options: each field its option's value, else its default;
    lists become tuples (the configs are frozen and hashable)."""
    values = {}
    for f in fields(config):
        if f.name in options:
            value = options[f.name]
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return config(**values)
