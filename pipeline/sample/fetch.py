"""Fetch the embedded sample inputs from package registries into a git-ignored cache.

Everything comes from PyPI or Debian, the only registries a fresh machine may reach:
- enwiki: the shortened English Wikipedia dump shipped inside gensim's wheel (206 pages);
- wordnet: Debian's `wordnet-base` (WordNet 3.0 database files), unpacked with `dpkg -x`,
  which needs no installation and no root.
- animal-mnist: the two data files (10,000 28x28 animal silhouettes and their labels) from
  `animal-mnist`'s wheel; the package itself is not installed (its loader imports tensorflow).
- multiwiki: small multistream dumps of de, ja, ru, th and zh Wikipedia-shaped text, an hourly
  pageview file and a Thai Open Multilingual Wordnet file, built from Debian's translated man
  pages and pythainlp's wheel (pipeline/sample/multiwiki.py).
Each item is fetched once; a marker file makes reruns instant.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

GENSIM_VERSION = "4.4.0"
ENWIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
ANIMAL_MNIST_VERSION = "0.4"
ANIMAL_MNIST_DIR = "animal_mnist/data/Animal_MNIST/"


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _apt_download(package: str, dest: Path, version: str | None = None, hint: str = "") -> Path:
    """`apt-get download` (NAME=VERSION when pinned), refreshing the package lists once if
    they are empty or stale; `hint` is added to the error when the download fails."""
    spec = package if version is None else f"{package}={version}"
    cmd = ["apt-get", "download", "-o", "APT::Sandbox::User=root", spec]
    res = _run(cmd, cwd=dest)
    if res.returncode != 0:
        upd = _run(["apt-get", "update"])
        if upd.returncode != 0:
            raise SystemExit(f"error: apt-get update failed (needed to fetch {package}): {upd.stderr.strip()[-300:]}")
        res = _run(cmd, cwd=dest)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if res.returncode != 0 or not debs:
        raise SystemExit(f"error: apt-get download {spec} failed{hint}: {res.stderr.strip()[-300:]}")
    return debs[-1]


def _pip_download_wheel(project: str, version: str, dest: Path) -> Path:
    """One wheel, without its dependencies, from the package index pip is configured with."""
    res = _run(
        [sys.executable, "-m", "pip", "download", f"{project}=={version}", "--no-deps", "--only-binary", ":all:"]
        + ["-d", str(dest)]
    )
    wheels = list(dest.glob(f"{project.replace('-', '_')}-*.whl"))
    if res.returncode != 0 or not wheels:
        raise SystemExit(f"error: pip download {project} failed: {res.stderr.strip()[-300:]}")
    return wheels[0]


def fetch_enwiki(cache: Path) -> Path:
    out = cache / "enwiki" / Path(ENWIKI_MEMBER).name
    if out.exists():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pip_download_wheel("gensim", GENSIM_VERSION, Path(tmp))
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z, z.open(ENWIKI_MEMBER) as src, open(out.with_suffix(".part"), "wb") as dst:
            shutil.copyfileobj(src, dst)
        out.with_suffix(".part").rename(out)
    return out


def fetch_deb(cache: Path, package: str) -> Path:
    """Unpack a Debian package under cache/<package>/ (its usr/share/... layout kept)."""
    root = cache / package
    marker = root / ".complete"
    if marker.exists():
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise SystemExit(f"error: apt-get and dpkg are needed to fetch {package}")
    with tempfile.TemporaryDirectory() as tmp:
        deb = _apt_download(package, Path(tmp))
        if root.exists():
            shutil.rmtree(root)
        res = _run(["dpkg", "-x", str(deb), str(root)])
        if res.returncode != 0:
            raise SystemExit(f"error: dpkg -x {deb.name} failed: {res.stderr.strip()}")
    marker.write_text(deb.name + "\n")
    return root


def fetch_wordnet(cache: Path) -> Path:
    return fetch_deb(cache, "wordnet-base") / "usr" / "share" / "wordnet"


def fetch_openclipart(cache: Path) -> Path:
    """Debian's openclipart-png and openclipart-svg, unpacked side by side under cache/."""
    fetch_deb(cache, "openclipart-png")
    fetch_deb(cache, "openclipart-svg")
    return cache


def fetch_animal_mnist(cache: Path) -> Path:
    """The files under animal_mnist/data/Animal_MNIST/ of animal-mnist's wheel, in cache/animal-mnist/."""
    root = cache / "animal-mnist"
    marker = root / ".complete"
    if marker.exists():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pip_download_wheel("animal-mnist", ANIMAL_MNIST_VERSION, Path(tmp))
        root.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            members = [m for m in z.namelist() if m.startswith(ANIMAL_MNIST_DIR) and not m.endswith("/")]
            if not members:
                raise SystemExit(f"error: {wheel.name} has no files under {ANIMAL_MNIST_DIR}")
            for member in members:
                out = root / Path(member).name
                with z.open(member) as src, open(out.with_suffix(".part"), "wb") as dst:
                    shutil.copyfileobj(src, dst)
                out.with_suffix(".part").rename(out)
    marker.write_text(wheel.name + "\n")
    return root


def fetch_multiwiki(cache: Path) -> Path:
    """The multilingual sample under cache/multiwiki/ (pipeline/sample/multiwiki.py builds it)."""
    from .multiwiki import fetch_multiwiki as fetch  # it imports this module's helpers

    return fetch(cache)


ITEMS = {
    "enwiki": fetch_enwiki,
    "wordnet": fetch_wordnet,
    "openclipart": fetch_openclipart,
    "animal-mnist": fetch_animal_mnist,
    "multiwiki": fetch_multiwiki,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.sample.fetch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("items", nargs="*", default=list(ITEMS), choices=list(ITEMS), help="what to fetch (default: all)")
    ap.add_argument("--cache", default=".cache/sample", help="cache folder (default: %(default)s)")
    args = ap.parse_args(argv)
    cache = Path(args.cache)
    for name in args.items:
        print(f"{name}: {ITEMS[name](cache)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
