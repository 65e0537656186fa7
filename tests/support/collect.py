"""The collection steps as the tests call them: settings as keywords.

Each helper builds the step's config from the keywords given (the rest keep the config's
defaults; a keyword the config lacks is a TypeError, so a typo cannot pass unnoticed) and a
local engine of `workers` processes, then calls the real step function.
"""

from __future__ import annotations

from pipeline.collect import balance as balance_step
from pipeline.collect import download as download_step
from pipeline.collect import match as match_step
from pipeline.collect.config import BalanceConfig, DownloadConfig, MatchConfig, PoolConfig
from pipeline.collect.pool import build_pool as build_pool_step
from pipeline.distribute import Engine


def _config(kind: type, settings: dict):
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})


def build_pool(inputs, out_dir, *, workers: int = 1, progress=None, **settings) -> dict:
    return build_pool_step(inputs, out_dir, _config(PoolConfig, settings), Engine(workers=workers), progress)


def match_pool(pool_glob, queries, out_dir, *, workers: int = 1, progress=None, **settings) -> dict:
    return match_step.match_pool(
        pool_glob, queries, out_dir, _config(MatchConfig, settings), Engine(workers=workers), progress
    )


def balance(curation, queries, *, workers: int = 1, progress=None, **settings) -> dict:
    return balance_step.balance(curation, queries, _config(BalanceConfig, settings), Engine(workers=workers), progress)


def download(curation, out, *, engine: Engine | None = None, quiet: bool = True, **settings) -> dict:
    return download_step.download(curation, out, _config(DownloadConfig, settings), engine or Engine(), quiet=quiet)
