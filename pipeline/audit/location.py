"""Where the audit's inputs and outputs live: a local folder or an fsspec URL (s3://, gs://, ...).

A dataset written to object storage is audited where it lies. Local paths and file:// URLs
stay `pathlib.Path`, so local runs behave exactly as before; other URLs become `RemotePath`,
the handful of Path methods the audit uses, on an fsspec filesystem. DuckDB reads those
files through the same filesystem (`con.register_filesystem`), not through its httpfs
extension, which would be downloaded at run time (and there may be no internet).
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Union

from ..errors import InputError


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


class RemotePath:
    """A file or folder on an fsspec filesystem, with the Path methods the audit needs.

    `glob` keeps each listed file's info, so summing the sizes of tens of thousands of shards
    costs one listing, not one request per file.
    """

    __slots__ = ("fs", "path", "_info")

    def __init__(self, fs, path: str, info: dict | None = None):
        self.fs = fs
        self.path = path.rstrip("/")
        self._info = info

    def __str__(self) -> str:
        return self.fs.unstrip_protocol(self.path)

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, name: str) -> "RemotePath":
        return RemotePath(self.fs, f"{self.path}/{name}")

    @property
    def parent(self) -> "RemotePath":
        return RemotePath(self.fs, posixpath.dirname(self.path) or self.path)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    def _stat(self) -> dict | None:
        if self._info is None:
            try:
                self._info = self.fs.info(self.path)
            except FileNotFoundError:
                return None
        return self._info

    def exists(self) -> bool:
        return self._stat() is not None

    def is_file(self) -> bool:
        return (self._stat() or {}).get("type") == "file"

    def is_dir(self) -> bool:
        return (self._stat() or {}).get("type") == "directory"

    def glob(self, pattern: str) -> Iterator["RemotePath"]:
        found = self.fs.glob(f"{self.path}/{pattern}", detail=True)
        for path in sorted(found):
            yield RemotePath(self.fs, path, found[path])

    def stat(self) -> SimpleNamespace:
        return SimpleNamespace(st_size=int((self._stat() or {}).get("size") or 0))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.fs.cat_file(self.path).decode(encoding)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.fs.pipe_file(self.path, text.encode(encoding))


Location = Union[Path, RemotePath]


def locate(where: str | Path | RemotePath, what: str = "") -> Location:
    """A local Path for local paths and file:// URLs, a RemotePath for other fsspec URLs (no I/O).
    `what` (the option, e.g. "--shards") prefixes the error for an unknown protocol."""
    if isinstance(where, (Path, RemotePath)):
        return where
    if "://" not in where:
        return Path(where)
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    try:
        fs, path = fsspec.core.url_to_fs(where)
    except (ImportError, ValueError) as e:  # unknown protocol, backend not installed
        raise InputError(f"{what} {where}: {_why(e)}".lstrip()) from None
    return Path(path) if isinstance(fs, LocalFileSystem) else RemotePath(fs, path)


def check_readable(loc: Location, what: str) -> None:
    """Reach a remote location once, up front: a missing bucket or bad credentials become one
    line naming the URL, instead of views that silently look empty or a traceback later.

    A missing folder in an existing bucket is not an error: like a missing local folder, its
    views are reported unavailable.
    """
    if not isinstance(loc, RemotePath):
        return
    try:
        if loc.exists():
            return
    except Exception as e:  # credentials, permissions, endpoint: whatever the backend raises
        raise InputError(f"{what} {loc}: cannot read ({_why(e)})") from None
    bucket = loc.path.split("/", 1)[0]
    try:
        loc.fs.info(bucket)
    except FileNotFoundError:
        raise InputError(f"{what} {loc}: bucket {bucket!r} does not exist") from None
    except Exception:
        pass  # e.g. may list the prefix but not the bucket: treat the folder as missing


def output_location(shards: str | Path | RemotePath, out: str | Path | RemotePath | None) -> Location:
    """`--out`, or SHARDS/audit on the same store as the shards."""
    return locate(out, "--out") if out is not None else locate(shards, "--shards") / "audit"


def write_outputs(out: Location, files: dict[str, str]) -> None:
    """Write each file completely or not at all: locally via a renamed temporary file, on object
    storage by one upload per file (an object appears only once its upload succeeded)."""
    if isinstance(out, Path):
        from ..io import atomic_path

        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            with atomic_path(out / name) as tmp:
                tmp.write_text(text, encoding="utf-8")
        return
    for name, text in files.items():
        try:
            (out / name).write_text(text)
        except Exception as e:
            raise InputError(f"cannot write {out / name} ({_why(e)})") from None


def register(con, *locations: Location) -> None:
    """Let DuckDB read remote locations through their fsspec filesystems (one per protocol)."""
    seen: set[str] = set()
    for loc in locations:
        if not isinstance(loc, RemotePath):
            continue
        names = loc.fs.protocol if isinstance(loc.fs.protocol, (tuple, list)) else (loc.fs.protocol,)
        if seen.intersection(names):
            continue
        seen.update(names)
        con.register_filesystem(loc.fs)
