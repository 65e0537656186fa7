"""Interactive use: `--query WORD` (one query's story) and `--sql` (any SQL over the views)."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import date, datetime
from decimal import Decimal

import duckdb

from ..errors import InputError
from .views import VIEWS, Inputs

SAMPLE_CAPTIONS = 5
MAX_CELL = 80


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _cell(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, (list, dict)):
        v = json.dumps(_jsonable(v), ensure_ascii=False)
    s = str(v).replace("\n", "\\n").replace("\t", " ")
    return s if len(s) <= MAX_CELL else s[: MAX_CELL - 1] + "…"


def format_rows(names: list[str], rows: list[tuple], fmt: str = "table") -> str:
    if fmt == "json":
        return (
            json.dumps([{n: _jsonable(v) for n, v in zip(names, r)} for r in rows], ensure_ascii=False, indent=1) + "\n"
        )
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(names)
        for r in rows:
            w.writerow(
                [
                    json.dumps(_jsonable(v), ensure_ascii=False)
                    if isinstance(v, (list, dict))
                    else ("" if v is None else v)
                    for v in r
                ]
            )
        return buf.getvalue()
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    numeric = [
        all(isinstance(r[i], (int, float, Decimal)) or r[i] is None for r in rows) and rows for i in range(len(names))
    ]

    def line(vals):
        return "  ".join(
            v.rjust(w) if numeric[i] else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths))
        ).rstrip()

    out = [line(names), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def run_sql(inp: Inputs, sql: str, fmt: str = "table") -> str:
    try:
        cur = inp.con.execute(sql)
        if cur.description is None:
            return ""
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    except duckdb.Error as e:
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        hint = ""
        for name in inp.missing:
            if name in sql:
                hint += f"; view '{name}' is unavailable ({inp.missing[name]})"
        if not hint and isinstance(e, duckdb.CatalogException):
            hint = f"; views: {', '.join(n for n in VIEWS if n in inp.available)}"
        raise InputError(f"--sql: {msg}{hint}") from None
    return format_rows(names, rows, fmt)


def query_info(inp: Inputs, word: str) -> dict:
    """One query: its source, counts before/after balancing and in the shards, sample captions."""
    if not inp.has("queries"):
        raise InputError(f"--query needs the query list: {inp.missing.get('queries')}")
    hits = inp.rows("SELECT * FROM queries WHERE query = ? ORDER BY query_id", [word])
    if not hits:
        similar = [
            r["query"]
            for r in inp.rows(
                "SELECT query FROM queries WHERE lower(query) = lower(?) OR query ILIKE ? "
                "ORDER BY lower(query) <> lower(?), length(query), query LIMIT 8",
                [word, f"%{word}%", word],
            )
        ]
        raise InputError(
            f"--query {word!r}: not in {inp.queries_file}"
            + (f"; similar: {', '.join(similar)}" if similar else "")
            + " (queries are case-sensitive)"
        )
    q = hits[0]
    qid = int(q["query_id"])
    info: dict = {
        "query": q["query"],
        "query_id": qid,
        "source": q.get("source"),
        "wikipedia": {k: q.get(k) for k in ("count", "pmi", "views") if k in q},
    }
    settings = inp.stats.get("balance_settings") or inp.stats.get("balance") or {}
    t = settings.get("per_query")
    if inp.has("entry_counts"):
        before = inp.value("SELECT count FROM entry_counts WHERE query_id = ?", [qid])
        info["matches_before_balancing"] = None if before is None else int(before)
        if t is not None and before:
            info["per_query_cap"] = int(t)
            info["keep_probability"] = round(min(1.0, int(t) / max(1, int(before))), 6)
    elif inp.has("matches"):
        info["matches_before_balancing"] = int(
            inp.value("SELECT count(*) FROM matches WHERE list_contains(query_ids, ?)", [qid])
        )
    if inp.has("selected"):
        info["kept_after_balancing"] = int(
            inp.value("SELECT count(*) FROM selected WHERE list_contains(query_ids, ?)", [qid])
        )
    if inp.has("samples") and "query_ids" in inp.columns("samples"):
        r = inp.one(
            "SELECT count(*), count(*) FILTER (WHERE status = 'success') FROM samples "
            "WHERE list_contains(query_ids, ?)",
            [qid],
        )
        info["download_attempts"], info["images_in_shards"] = int(r[0]), int(r[1])
        cap = "caption" if "caption" in inp.columns("samples") else "NULL"
        info["samples"] = [
            {
                "image": f"{inp.shards / (r['shard'] + '.tar')}:{r['key']}.jpg",
                "caption": r["caption"],
                "url": r.get("url"),
            }
            for r in inp.rows(
                f"SELECT shard, key, {cap} AS caption, url FROM samples "
                f"WHERE status = 'success' AND list_contains(query_ids, ?) "
                f"ORDER BY shard, key LIMIT {SAMPLE_CAPTIONS}",
                [qid],
            )
        ]
    if len(hits) > 1:
        info["duplicate_ids"] = [int(h["query_id"]) for h in hits[1:]]
    return info


def format_query(info: dict, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(_jsonable(info), ensure_ascii=False, indent=1) + "\n"
    if fmt == "csv":
        flat = {k: v for k, v in info.items() if k not in ("samples", "wikipedia")}
        flat.update({f"wikipedia_{k}": v for k, v in info.get("wikipedia", {}).items()})
        return format_rows(list(flat), [tuple(flat.values())], "csv")
    lines = [f"query      {info['query']!r} (id {info['query_id']}, source {info['source']})"]
    wiki = ", ".join(
        f"{k} {v:,}" if isinstance(v, int) else f"{k} {v:.2f}"
        for k, v in info.get("wikipedia", {}).items()
        if v is not None
    )
    if wiki:
        lines.append(f"wikipedia  {wiki}")
    labels = [
        ("matches_before_balancing", "matched texts (before balancing)"),
        ("per_query_cap", "cap per query (t)"),
        ("keep_probability", "keep probability min(1, t/count)"),
        ("kept_after_balancing", "texts kept after balancing"),
        ("download_attempts", "download attempts"),
        ("images_in_shards", "images in the shards"),
    ]
    for key, label in labels:
        if key in info:
            v = info[key]
            lines.append(f"  {label:<36} {v:,}" if isinstance(v, int) else f"  {label:<36} {v}")
    if info.get("samples"):
        lines.append("sample captions:")
        for s in info["samples"]:
            lines.append(f"  {s['image']}")
            lines.append(f"      {s['caption']}")
    elif "samples" in info:
        lines.append("no image in the shards for this query")
    return "\n".join(lines) + "\n"
