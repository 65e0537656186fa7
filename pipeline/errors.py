"""The errors every CLI turns into one line: bad input (exit 2) and storage faults (exit 1).

Exit codes: 2 = the command cannot work as given (bad input, an option out of range, an
output folder another run holds); fix the command or its inputs. 1 = a resource fault
(a disk full, a read-only or failing disk, a part that failed on every retry); the same
command succeeds once the resource is back, and resumes from the finished parts.
"""

from __future__ import annotations

import errno
import os
import re

EXIT_INPUT_ERROR = 2
EXIT_RESOURCE_ERROR = 1


def printable(text: str, limit: int = 120) -> str:
    """`text` cut to `limit` characters, every non-printable one escaped (``\\x1b``, ``\\u202e``).

    Error messages quote input files; raw, a file's escape sequences would drive the
    terminal and its bidi controls reorder the line. `str.isprintable` is false for
    exactly those: C0/C1 controls, format characters (bidi, zero-width), separators other
    than the space, surrogates and unassigned code points.
    """
    cut = text[:limit]
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in cut)
    return out + "..." if len(text) > limit else out


def one_line(exc: BaseException, typed: bool = False, limit: int = 300) -> str:
    """An exception as one line of an error message: the first line of its text, escaped
    (messages quote input bytes) and cut to `limit`; `Type: line` when `typed`; the type's
    name when it has no text. Never torch's advice to load unsafely (its weights_only
    message suggests weights_only=False)."""
    line = (str(exc).strip().splitlines() or [""])[0].strip()
    if "weights_only" in line or "Weights only" in line:
        line = "refused by the safe loader"
    if not line:
        return type(exc).__name__
    line = printable(line, limit)
    return f"{type(exc).__name__}: {line}" if typed else line


class InputError(Exception):
    """Bad or missing input. The message names the file (and position) and what is wrong."""


class OutputInUse(InputError):
    """The output folder is held by another run (see `outlock`)."""


# Faults of the storage a stage writes to, which no retry of the same part can cure while
# they last: a full disk or quota, a read-only mount, a failing device.
STORAGE_ERRNOS = tuple(
    e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS, errno.EIO) if e is not None
)
_STORAGE_TEXTS = tuple(os.strerror(e) for e in STORAGE_ERRNOS)  # "No space left on device", ...


def storage_fault(exc: BaseException) -> tuple[str | None, str] | None:
    """(path or None, problem) when `exc`, or an exception it wraps, is a storage fault.

    Such faults reach the CLI in several forms: an OSError with its errno and file name, a
    pyarrow OSError without a file name, a DuckDB error that only says it in its message
    (`Could not write file "PATH": No space left on device`), or a worker's exception
    behind a `PartFailed` (its `__context__`) or a Ray task error (its `cause`). This looks
    through all of them, so a full disk is one line wherever it happened.
    """
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None and e.errno in STORAGE_ERRNOS:
            name = e.filename if isinstance(e.filename, (str, bytes, os.PathLike)) else None
            return (
                os.fsdecode(name) if name is not None else _quoted_path(str(e), os.strerror(e.errno)),
                os.strerror(e.errno),
            )
        text = str(e)
        for problem in _STORAGE_TEXTS:
            if problem in text:
                return _quoted_path(text, problem), problem
        todo += [w for w in (e.__cause__, e.__context__, getattr(e, "cause", None)) if isinstance(w, BaseException)]
    return None


def _quoted_path(text: str, problem: str) -> str | None:
    """The path a message quotes right before the problem: `"PATH": problem` or `'PATH': problem`."""
    m = re.search(r"""["']([^"'\n]+)["']:? """ + re.escape(problem), text)
    return m.group(1) if m else None
