"""Where a stage reads and writes: a local folder or an fsspec URL (s3://, gs://, file://).

On a cluster, workers on other nodes must share a stage's inputs and outputs, so every
folder a stage uses may be object storage. universal_pathlib gives the pathlib API over
fsspec: a local path stays a `pathlib.Path` subclass (local runs behave exactly as
before), a URL becomes a `UPath` with the same methods (`/`, `exists`, `glob`,
`read_text`, `open`, `unlink`, ...). What pathlib cannot say is here:

* `is_remote`: whether a location is on a remote store;
* `atomic_path` (in `io`) writes remote files locally and uploads them whole;
* `arrow_filesystem` and `register_duckdb` let pyarrow and DuckDB read through the same
  fsspec filesystem (never DuckDB's httpfs extension, which is downloaded at run time);
* `rmtree` and `clean` for folders on either kind of store;
* `scheme`, `is_url`, `filesystem` and `check_bucket` for code that holds URLs as strings
  (the trainer's shard lists, run folders and checkpoints).

Credentials and endpoints come from fsspec's usual configuration (for S3: the AWS
variables, `~/.aws`, `AWS_ENDPOINT_URL` for MinIO/Ceph/R2), in every process alike.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import fsspec
from upath import UPath

from .errors import InputError, one_line

# Parts appear on the store from other processes (the workers, other nodes) between two
# looks at a folder: a cached listing would hide them, so object stores are always listed
# afresh (fsspec applies this to every filesystem it creates for the protocol).
for _protocol in ("s3", "gcs", "gs", "abfs", "az"):
    fsspec.config.conf.setdefault(_protocol, {}).setdefault("use_listings_cache", False)


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme(url: str | os.PathLike) -> str:
    """`s3`, `https`, `file`, ... in lower case; `pipe` for webdataset's `pipe:CMD`; "" for a plain path."""
    text = os.fspath(url)
    if text.startswith("pipe:"):
        return "pipe"
    m = _SCHEME.match(text)
    return m.group(1).lower() if m else ""


def is_url(path: str | os.PathLike) -> bool:
    """A remote (fsspec) location such as `s3://...`; `file://` URLs and plain paths are local."""
    return scheme(path) not in ("", "file", "pipe")


def filesystem(url: str):
    """(fsspec filesystem, path without the scheme) for a remote URL; InputError when no
    fsspec backend can open it (gs:// without gcsfs, a malformed URL)."""
    from fsspec.core import url_to_fs

    try:
        return url_to_fs(url)
    except Exception as e:  # noqa: BLE001 - ImportError of the backend, a bad URL
        raise InputError(f"{url}: cannot open ({one_line(e, typed=True)})") from None


def check_bucket(url: str, what: str) -> None:
    """InputError `WHAT: no such bucket 'NAME'` when the URL's bucket does not exist: one
    line up front instead of a traceback at the first write, or a run that reads nothing."""
    fs, _ = filesystem(url)
    proto, rest = url.split("://", 1)
    bucket = rest.split("/", 1)[0]
    try:  # not fs.exists: s3fs answers False for an endpoint it cannot reach
        fs.info(f"{proto}://{bucket}")
    except FileNotFoundError:
        raise InputError(f"{what}: no such bucket '{bucket}'") from None
    except PermissionError:
        pass  # may not look at the bucket itself; what is read or written in it is checked then
    except Exception as e:  # noqa: BLE001 - credentials, endpoint down, ...
        raise InputError(f"{what}: cannot reach {proto}://{bucket} ({one_line(e, typed=True)})") from None


def location(path: str | os.PathLike, what: str = "") -> Path:
    """A path for `path`: `pathlib.Path` for local paths and file:// URLs, else a UPath (no
    I/O). An unknown protocol or a missing fsspec backend is an InputError, prefixed by
    `what` (the option, e.g. "--out")."""
    if isinstance(path, UPath):
        return path  # type: ignore[return-value]  # a UPath stands in for a Path (same API)
    text = os.fspath(path)
    if text.startswith("file://"):
        text = text[len("file://") :]
    if "://" not in text:
        return Path(text)
    try:
        return UPath(text)  # type: ignore[return-value]  # a UPath stands in for a Path (same API)
    except (ImportError, ValueError) as e:
        raise InputError(f"{what} {text}: {one_line(e, typed=True)}".lstrip()) from None


def is_remote(path) -> bool:
    return isinstance(path, UPath) and not isinstance(path, Path)


def url(path) -> str:
    """The string other processes (and fsspec) open: a local path or the full URL."""
    return str(path)


def listing(folder, pattern: str) -> list:
    """Files in `folder` matching `pattern`, sorted by name, on either kind of store."""
    return sorted(folder.glob(pattern), key=str)


def total_size(folder, pattern: str) -> int:
    """Bytes of the files in `folder` matching `pattern`: one listing on an object store
    (tens of thousands of shards would otherwise cost a request each)."""
    if not is_remote(folder):
        return sum(p.stat().st_size for p in folder.glob(pattern))
    found = folder.fs.glob(f"{folder.path}/{pattern}", detail=True)
    return sum(int(info.get("size") or 0) for info in found.values() if info.get("type", "file") == "file")


def check_readable(path, what: str) -> None:
    """Reach a remote location once, up front: a missing bucket or bad credentials become one
    line naming the URL instead of a traceback or silently empty results later. A missing
    folder in an existing bucket is not an error here (like a missing local folder)."""
    if not is_remote(path):
        return
    try:
        if path.exists():
            return
    except Exception as e:  # noqa: BLE001 - credentials, permissions, endpoint: whatever the backend raises
        raise InputError(f"{what} {url(path)}: cannot read ({one_line(e, typed=True)})") from None
    bucket = path.path.split("/", 1)[0]
    try:
        path.fs.info(bucket)
    except FileNotFoundError:
        raise InputError(f"{what} {url(path)}: bucket {bucket!r} does not exist") from None
    except Exception:  # noqa: BLE001 - e.g. may list the prefix but not the bucket: the folder is missing
        pass


def rmtree(path) -> None:
    """Remove a folder and everything under it, on either kind of store (missing is fine)."""
    if is_remote(path):
        if path.exists():
            path.fs.rm(path.path, recursive=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def check_writable(path, what: str) -> None:
    """Fail in one line, before any work, when a remote output location cannot be used
    (no such bucket, no credentials), instead of failing in every worker."""
    if not is_remote(path):
        return
    probe = path / ".write-check"
    try:
        probe.write_text("ok\n")
        probe.unlink()
    except (OSError, PermissionError, ValueError) as e:
        raise InputError(f"{what} {url(path)}: cannot write there ({one_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - botocore's credential errors are not OSErrors
        raise InputError(f"{what} {url(path)}: cannot write there ({one_line(e, typed=True)})") from None


def arrow_filesystem(path):
    """(pyarrow filesystem, path within it) to pass to pyarrow readers and writers."""
    if not is_remote(path):
        return None, str(path)
    import pyarrow.fs as pafs

    return pafs.PyFileSystem(pafs.FSSpecHandler(path.fs)), path.path


def register_duckdb(con, *paths) -> None:
    """Let DuckDB open the remote paths among `paths` through their fsspec filesystems."""
    seen = set()
    for p in paths:
        if is_remote(p) and p.fs.protocol not in seen:
            seen.add(p.fs.protocol)
            con.register_filesystem(p.fs)


def read_table(path, **kwargs):
    """pyarrow.parquet.read_table on either kind of store."""
    import pyarrow.parquet as pq

    fs, p = arrow_filesystem(location(path))
    return pq.read_table(p, filesystem=fs, **kwargs)


def parquet_file(path):
    """A pyarrow ParquetFile on either kind of store (use it as a context manager)."""
    import pyarrow.parquet as pq

    path = location(path)
    if not is_remote(path):
        return pq.ParquetFile(str(path))
    return pq.ParquetFile(path.fs.open(path.path, "rb"))


def load_npy(path):
    """A .npy array: memory-mapped when local, read whole when remote."""
    import io

    import numpy as np

    path = location(path)
    if not is_remote(path):
        return np.load(str(path), mmap_mode="r")
    return np.load(io.BytesIO(path.read_bytes()))


def publish(tmp: Path, path) -> None:
    """Move a finished local file onto `path` (rename locally, upload whole when remote)."""
    path = location(path)
    if is_remote(path):
        path.fs.put_file(str(tmp), path.path)
        Path(tmp).unlink(missing_ok=True)
    else:
        os.replace(tmp, path)


def scratch_for(path) -> Path:
    """Where to write a file that `publish` will move onto `path`: a sibling temporary name
    locally (same disk, so the rename is atomic), a local temporary file for a remote path."""
    import tempfile
    import uuid

    path = location(path)
    if is_remote(path):
        fd, name = tempfile.mkstemp(prefix=".upload-", suffix="-" + path.name)
        os.close(fd)
        return Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
