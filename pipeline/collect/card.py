"""What the shard folder says about itself: `sizes.json` and a dataset card (`README.md`).

Written by the download step once every shard is done, so the folder opens as it is:

* `sizes.json` ({"00000.tar": samples, ...}, the samples in each tar = the shard's
  successes) is what open_clip's `get_dataset_size` reads: without it open_clip_train
  needs `--train-num-samples`.
* `README.md` is a Hugging Face dataset card. Its YAML `configs` point `data_files` at
  the tars; without it `load_dataset(folder)` picks its loader by the most common file
  extension and gets the JSON loader over the `NNNNN_stats.json` files. The rest says
  what the folder holds, how it was made and under which licenses, from the steps' own
  stats (`curation/*_stats.json`).

Both are rewritten whole (atomically) from every shard's stats after each successful
download step, so a rerun that redoes one shard leaves them right, and an unchanged rerun
leaves them byte-identical (no dates). img2dataset's incremental mode reads every `*.json`
of the folder as a shard's stats, so `remove_derived` deletes them before it runs.
"""

from __future__ import annotations

import json
import re

import yaml

from .. import duck, layout
from ..io import atomic_path, sql_file_list
from ..storage import is_remote, listing, location

SIZES = "sizes.json"
CARD = "README.md"
DATA_FILES = "*.tar"  # the card's data_files glob: the shards, never their .parquet or .json
TASKS = ["zero-shot-image-classification", "image-to-text", "text-to-image"]
# Hugging Face's size_categories buckets: (upper bound, label).
SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (10**9, "100M<n<1B"),
    (10**10, "1B<n<10B"),
    (10**11, "10B<n<100B"),
    (10**12, "100B<n<1T"),
]
UNKNOWN_LICENSE = "other"
UNKNOWN_NOTE = (
    "web images: each sample's `url` says where it came from; no license was recorded for "
    "them and their rights stay with their owners, so check each site's terms before reuse"
)
SOURCES_LISTED = 20


def _balancing_line(bal: dict, per_lang: dict | None) -> str:
    """How the shards were balanced: at t before the download, or not at all (online);
    worldwide, which language's t that is."""
    reference = (
        f" ({bal.get('reference_lang')}'s t; each other language's t gives its tail of entries matched "
        "fewer than t times the same share of its matches, MetaCLIP 2's rule)"
        if per_lang
        else ""
    )
    if bal.get("mode") == "online":
        return (
            "- balancing: **none in these shards** (`--balance online`): every matched pair was downloaded"
            + (f" (at most about {bal.get('online_cap')} x t per query)" if bal.get("online_cap") else "")
            + f"; balancing a training pass at t = {_n(bal.get('per_query'))} keeps a text with probability "
            f"`keep_prob` (1 - prod(1 - min(1, t / count))), about {_n(round(bal.get('expected_kept') or 0))} "
            "texts a pass; each query's counts over the whole matched set are in `entry_counts.parquet`; "
            "train with `python -m train --balance-t T` to draw a balanced subset each pass" + reference
        )
    return (
        f"- balancing: t = {_n(bal.get('per_query'))} per query, seed {bal.get('seed', 'unknown')}; "
        f"{_n(bal.get('queries_over_cap'))} queries were over t" + reference
    )


def _language_table(per_lang: dict | None) -> list[str]:
    """Worldwide: per text language (identified by py3langid), its t, matched and kept texts."""
    if not per_lang:
        return []
    lines = ["| language | t | matched texts | kept |", "| --- | ---: | ---: | ---: |"]
    for lang, info in per_lang.items():
        t = "none (no entries)" if info.get("t") is None else _n(info["t"])
        lines.append(f"| {lang} | {t} | {_n(info.get('matched'))} | {_n(info.get('kept'))} |")
    return [*lines, ""]


def remove_derived(out) -> None:
    """Delete sizes.json and README.md before img2dataset runs: it would read sizes.json as
    the stats of a shard, and both would describe shards about to change."""
    out = location(out)
    for name in (SIZES, CARD):
        path = out / name
        if path.exists():
            path.unlink()


def shard_sizes(out) -> dict[str, int]:
    """{"NNNNN.tar": successes} from every `NNNNN_stats.json`: img2dataset writes a sample to
    the tar only when it succeeded (the shard parquet has a row for every attempt)."""
    sizes = {}
    for path in listing(location(out), layout.SHARD_STATS_GLOB):
        stats = json.loads(path.read_text())
        sizes[path.name[: -len(layout.STATS_JSON)] + ".tar"] = int(stats.get("successes", 0))
    return dict(sorted(sizes.items()))


def size_category(n: int) -> str:
    for bound, label in SIZE_CATEGORIES:
        if n < bound:
            return label
    return "n>1T"


def _read(path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def images_by_source(out) -> dict[str | None, int]:
    """Downloaded images per pool source (the shards' `source` column), out of core."""
    out = location(out)
    files = listing(out, "[0-9]*.parquet")
    if not files:
        return {}
    con = duck.connect(offline=True, remote=(out,))
    try:
        src = f"read_parquet({sql_file_list([str(f) for f in files])}, union_by_name = true)"
        cols = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
        if "source" not in cols:
            n = duck.one(con.execute(f"SELECT count(*) FROM {src} WHERE status = 'success'"))[0]
            return {None: int(n)} if n else {}
        rows = con.execute(
            f"SELECT source, count(*) FROM {src} WHERE status = 'success' GROUP BY source ORDER BY source NULLS LAST"
        ).fetchall()
    finally:
        con.close()
    return {s: int(n) for s, n in rows}


def _brace(names: list[str]) -> str:
    """A brace pattern for the tars (`{00000..00004}.tar`) when numbered without gaps."""
    stems = [n[: -len(".tar")] for n in names]
    if len(stems) == 1:
        return names[0]
    nums = [int(s) for s in stems]
    if nums == list(range(nums[0], nums[0] + len(nums))) and len({len(s) for s in stems}) == 1:
        return f"{{{stems[0]}..{stems[-1]}}}.tar"
    return "[0-9]*.tar"


def _md(text) -> str:
    """A table cell: no pipes or newlines from a path or a note."""
    return re.sub(r"[\r\n]+", " ", str(text)).replace("|", "\\|")


def _n(v) -> str:
    return "unknown" if v is None else f"{int(v):,}"


def render_card(
    folder: str,
    sizes: dict[str, int],
    by_source: dict,
    licenses: dict,
    stats: dict,
    image_size: int,
    samples_per_shard: int,
) -> str:
    """The card's text; depends only on its arguments."""
    images = sum(sizes.values())
    pool, match, bal, dl = (stats.get(k, {}) for k in layout.STEPS)
    known = {s: licenses[s] for s in by_source if s in licenses}
    ids = sorted({info["license"] for info in known.values()})
    unknown = [s for s in by_source if s not in licenses]
    if unknown or not ids:
        ids.append(UNKNOWN_LICENSE)
    meta: dict = {
        "pretty_name": "Image-text pairs collected by wit-builder",
        "license": ids[0] if len(ids) == 1 else ids,
    }
    if UNKNOWN_LICENSE in ids:
        meta["license_name"] = "web-images-rights-of-their-owners"
    per_lang = bal.get("languages") if isinstance(bal.get("languages"), dict) else None
    if per_lang:  # worldwide: the languages of the kept texts, as the Hub's card lists them
        meta["language"] = sorted(lang for lang, info in per_lang.items() if lang != "other" and info.get("kept"))
    meta.update(
        {
            "task_categories": TASKS,
            "size_categories": [size_category(images)],
            "tags": ["webdataset", "clip", "image-text-pairs"],
            "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILES}]}],
        }
    )
    pattern = f"{folder}/{_brace(list(sizes))}" if sizes else f"{folder}/[0-9]*.tar"
    attempted = dl.get("count")
    rate = f" ({images / attempted:.1%} of {attempted:,} attempted)" if attempted else ""
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip(),
        "---",
        "",
        "# Image-text pairs collected by wit-builder",
        "",
        "Written by the download step of `python -m pipeline shards` from this folder's own files; the step "
        "rewrites it (and `sizes.json`) whenever it finishes.",
        "",
        f"**{images:,} (image, caption) pairs in {len(sizes):,} webdataset shards**{rate}.",
        "",
        "| step | rows |",
        "| --- | ---: |",
        f"| candidate (image URL, text) rows read | {_n(pool.get('rows_in'))} |",
        f"| in the pool (normalised, de-duplicated) | {_n(pool.get('kept'))} |",
        f"| text contains a query | {_n(match.get('matched'))} |",
        f"| kept by balancing | {_n(bal.get('kept'))} |",
        f"| images in the shards | {images:,} |",
        "",
        "## How it was made",
        "",
        "CLIP's recipe (WIT, CLIP paper sec. 2.2): keep a pair when its text contains a query of the list, "
        "then class-balance to at most t pairs per query.",
        "",
        f"- queries: {_n(match.get('queries'))}"
        + (
            f", built with the {(match.get('queries_built_with') or {}).get('recipe')} recipe"
            if (match.get("queries_built_with") or {}).get("recipe")
            else ""
        ),
        f"- matching: the {match.get('recipe', 'clip')} rule",
        _balancing_line(bal, per_lang),
        f"- images: shorter side resized to {image_size} px (aspect kept, never upscaled), JPEG; "
        f"{samples_per_shard:,} samples per shard",
        "",
        *_language_table(per_lang),
        "## Files",
        "",
        "- `NNNNN.tar`: webdataset shards; per sample `KEY.jpg`, `KEY.txt` (the caption) and `KEY.json` "
        "(`uid`, `url`, `caption`, `query_ids`, `queries`, `keep_prob`, sizes, `sha256`)",
        "- `NNNNN.parquet`: one row per attempted download (status, error, sizes, sha256), "
        "`NNNNN_stats.json`: the shard's counts",
        "- `sizes.json`: samples per tar (open_clip's format)",
        "- `curation/`: the pool, matches, per-query counts and the balanced selection (parquet)",
        "",
        "## Loading",
        "",
        "```python",
        "import webdataset as wds",
        f'ds = wds.WebDataset({pattern!r}, shardshuffle=False).decode("pil").to_tuple("jpg", "txt", "json")',
        "```",
        "",
        "```bash",
        "# open_clip reads the sample count from sizes.json: no --train-num-samples needed",
        f"python -m open_clip_train.main --dataset-type webdataset --train-data '{pattern}' --model ViT-B-32",
        "```",
        "",
        "```python",
        "from datasets import load_dataset  # the configs above point it at the tars",
        f'ds = load_dataset({folder!r}, split="train")',
        "```",
        "",
        "## Licenses",
        "",
    ]
    if known:
        for lic in sorted({info["license"] for info in known.values()}):
            names = sorted({info.get("name") or lic for info in known.values() if info["license"] == lic})
            notes = sorted({info["note"] for info in known.values() if info["license"] == lic and info.get("note")})
            lines.append(f"- `{lic}`: {', '.join(names)}" + (f": {'; '.join(notes)}" if notes else "") + ".")
    if unknown or not known:
        lines.append(f"- `{UNKNOWN_LICENSE}`: {UNKNOWN_NOTE}.")
    lines.append("")
    if by_source:
        ranked = sorted(by_source.items(), key=lambda kv: (-kv[1], str(kv[0])))
        lines += ["| pool source | license | images |", "| --- | --- | ---: |"]
        for source, n in ranked[:SOURCES_LISTED]:
            lic = licenses.get(source, {}).get("license", UNKNOWN_LICENSE) if source is not None else UNKNOWN_LICENSE
            lines.append(f"| {_md(source if source is not None else '(not recorded)')} | {lic} | {n:,} |")
        if len(ranked) > SOURCES_LISTED:
            rest = ranked[SOURCES_LISTED:]
            lines.append(f"| {len(rest):,} more sources | | {sum(n for _, n in rest):,} |")
        lines.append("")
    return "\n".join(lines)


def write_derived(curation, out, image_size: int, samples_per_shard: int) -> dict[str, int]:
    """Write `sizes.json` and `README.md` into `out` from every shard's stats; returns the sizes."""
    curation, out = location(curation), location(out)
    sizes = shard_sizes(out)
    with atomic_path(out / SIZES) as tmp:
        tmp.write_text(json.dumps(sizes, indent=1, sort_keys=True) + "\n")
    stats = {k: _read(layout.step_stats(curation, k)) for k in layout.STEPS}
    licenses = stats["pool"].get("licenses") or {}
    folder = str(out) if is_remote(out) else out.as_posix()
    text = render_card(folder, sizes, images_by_source(out), licenses, stats, image_size, samples_per_shard)
    with atomic_path(out / CARD) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return sizes
