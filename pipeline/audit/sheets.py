"""Contact sheets: the report shows the images, not just their counts.

Three kinds of grid, each drawn deterministically (rows ordered by md5(seed, shard, key),
so the same shards and seed give the same pictures, on any engine):

- the most matched queries (by images in the shards), `PER_QUERY` images each;
- a random sample of the whole dataset (`RANDOM` images);
- each failure reason whose samples still have an image in the tars (img2dataset writes
  no image for a failed download, so on its shards this is normally empty; the report
  says so rather than leave the reader guessing).

Thumbnails are read from the tars by the parquet's key with one byte-range read each
(`tars.ShardImages`: no extraction) and embedded as small JPEG data URIs, so report.html
stays one self-contained file. `BUDGET_BYTES` caps the data URIs (the report stays under
3 MB whatever the dataset); a sheet that would pass it is cut short and says how many
images it left out. Each query's draw is a filtered scan of the samples' parquet files
(DuckDB keeps only the top rows of the ordering: bounded memory), as the other figures.
"""

from __future__ import annotations

from ..io import sql_str
from .tars import ShardImages, data_uri, thumbnail
from .views import Inputs

SEED = 0
TOP_QUERIES = 6
PER_QUERY = 8
RANDOM = 24
PER_FAILURE = 8
FAILURE_REASONS = 8
THUMB_PX = 112
BUDGET_BYTES = 2_500_000  # of data URIs; the rest of report.html is ~0.2 MB


def _order(seed: int, salt: str) -> str:
    """A seeded shuffle; the salt (the sheet's name) gives each sheet its own draw."""
    return f"md5({sql_str(f'{int(seed)}/{salt}/')} || shard || '/' || key)"


def contact_sheets(inp: Inputs, seed: int = SEED, budget: int = BUDGET_BYTES) -> dict:
    """{"available", "sheets": [{kind, title, note, images: [{shard, key, caption, src}]}], ...}.

    `src` is the thumbnail's data URI (summary.json drops it: `without_images`)."""
    if not inp.has("samples"):
        return {"available": False, "reason": inp.why_not("samples")}
    cols = set(inp.columns("samples"))
    cap = "caption" if "caption" in cols else "NULL"
    images = ShardImages(inp.shards)
    state = {"bytes": 0, "left_out": 0, "unreadable": 0}

    def draw(salt: str, where: str, params: list, limit: int) -> list[dict]:
        rows = inp.rows(
            f"SELECT shard, key, {cap} AS caption FROM samples WHERE {where} "
            f"ORDER BY {_order(seed, salt)} LIMIT {int(limit)}",
            params,
        )
        out = []
        for r in rows:
            try:
                found = images.image(str(r["shard"]), str(r["key"]))
                if found is None:
                    continue
                thumb = thumbnail(found[1], THUMB_PX)
            except (OSError, ValueError, SyntaxError, KeyError):  # Pillow raises these on a bad image
                state["unreadable"] += 1
                continue
            src = data_uri(thumb)
            if state["bytes"] + len(src) > budget:
                state["left_out"] += 1
                continue
            state["bytes"] += len(src)
            out.append({"shard": str(r["shard"]), "key": str(r["key"]), "caption": r["caption"], "src": src})
        return out

    sheets: list[dict] = []
    if "queries" in cols:
        top = inp.rows(
            "SELECT q AS query, count(*) AS n FROM (SELECT unnest(queries) AS q FROM samples "
            "WHERE status = 'success') GROUP BY q ORDER BY n DESC, q LIMIT ?",
            [TOP_QUERIES],
        )
        for t in top:
            sheets.append(
                {
                    "kind": "query",
                    "title": f"“{t['query']}”",
                    "note": f"{int(t['n']):,} images in the shards",
                    "query": t["query"],
                    "images": draw(
                        f"query:{t['query']}",
                        "status = 'success' AND list_contains(queries, ?)",
                        [t["query"]],
                        PER_QUERY,
                    ),
                }
            )
    sheets.append(
        {
            "kind": "random",
            "title": "A random sample of the dataset",
            "note": f"{RANDOM} images drawn with seed {seed}",
            "images": draw("random", "status = 'success'", [], RANDOM),
        }
    )
    failures: list[dict] = []
    if "error_message" in cols:
        reasons = inp.rows(
            "SELECT error_message AS reason, count(*) AS n FROM samples WHERE status <> 'success' "
            "AND error_message IS NOT NULL GROUP BY reason ORDER BY n DESC, reason LIMIT ?",
            [FAILURE_REASONS],
        )
        for r in reasons:
            got = draw(
                f"failure:{r['reason']}", "status <> 'success' AND error_message = ?", [r["reason"]], PER_FAILURE
            )
            failures.append({"reason": r["reason"], "failed": int(r["n"]), "with_image": len(got)})
            if got:
                sheets.append(
                    {
                        "kind": "failure",
                        "title": f"Failed: {r['reason']}",
                        "note": f"{int(r['n']):,} samples",
                        "images": got,
                    }
                )
    return {
        "available": True,
        "seed": seed,
        "thumbnail_px": THUMB_PX,
        "budget_bytes": budget,
        "bytes": state["bytes"],
        "left_out_for_budget": state["left_out"],
        "unreadable": state["unreadable"],
        "failure_reasons": failures,
        "sheets": sheets,
    }


def without_images(sheets: dict) -> dict:
    """The same, each image as (shard, key, caption) only: what summary.json keeps."""
    if not sheets.get("available"):
        return sheets
    return {
        **sheets,
        "sheets": [
            {**s, "images": [{k: v for k, v in im.items() if k != "src"} for im in s["images"]]}
            for s in sheets["sheets"]
        ],
    }
