"""Atomic file output, JSON / JSON-lines readers and the checks of JSON values.

Every output the pipeline writes goes through here so that a kill (or a full
disk) at any moment leaves either the previous file or the complete new one,
never a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """Open a temporary sibling of `path`; on success rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; the result should read like any other file
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A UTF-8 file's text; an unreadable file is a ValueError naming it (`what` says what it is)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read {what} ({exc})") from exc


def load_json_file(path: str | os.PathLike, what: str = "file") -> Any:
    """A JSON document from an input file; a read or parse error is one ValueError naming the file."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


class JSONLineError(ValueError):
    """A line of a JSON-lines text that is not JSON (`lineno` counts from 1, `msg` is the parser's)."""

    def __init__(self, where: str, lineno: int, msg: str) -> None:
        super().__init__(f"{where}:{lineno}: not valid JSON ({msg})")
        self.lineno, self.msg = lineno, msg


def parse_json_lines(text: str, where: str, strict: bool = True) -> tuple[list[Any], list[int]]:
    """The JSON value of each non-blank line and the numbers of the lines that are not JSON.

    strict: the first such line raises JSONLineError "<where>:<line>: not valid JSON (...)".
    """
    rows: list[Any] = []
    bad: list[int] = []
    # split on "\n" only: splitlines() would also cut at U+2028 and friends, which
    # write_jsonl (ensure_ascii=False) leaves raw inside strings
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if strict:
                raise JSONLineError(where, lineno, exc.msg) from exc
            bad.append(lineno)
    return rows, bad


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically; returns the number written."""
    n = 0
    with atomic_open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def iter_jsonl(path: str | os.PathLike, strict: bool = True, bad: list[int] | None = None) -> Iterator[Any]:
    """The JSON value of each non-blank line of a JSON-lines file, read line by line (a file can
    be larger than memory).  A line that is not JSON raises JSONLineError when `strict`, else its
    number is appended to `bad`.  Lines are the same as `parse_json_lines` cuts: text mode turns
    \r\n and \r into \n, and iteration splits on \n only."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                if strict:
                    raise JSONLineError(str(path), lineno, exc.msg) from exc
                if bad is not None:
                    bad.append(lineno)
                continue
            yield value


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSON-lines file; a malformed line raises ValueError naming file and line."""
    return list(iter_jsonl(path))


_NOT_JSON = object()


def _whole_json(path: str | os.PathLike) -> Any:
    try:
        return load_json_file(path)
    except ValueError:
        return _NOT_JSON


def read_json_or_lines(
    path: str | os.PathLike, strict: bool = True, what: str = "file"
) -> tuple[bool, Any, list[int]]:
    """A file that holds either one JSON document or JSON lines, streamed as lines first.

    (True, the document, []) when the whole file is one JSON value (a one-line file, or one
    document spread over lines); else (False, the rows, the numbers of the lines that are not
    JSON).  `strict`: a bad line of a file that is not one document raises JSONLineError; a file
    that cannot be read or decoded is a ValueError naming it (`what` says what it is).
    """
    rows: list[Any] = []
    bad: list[int] = []
    try:
        rows.extend(iter_jsonl(path, strict, bad))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read {what} ({exc})") from exc
    except JSONLineError:
        doc = _whole_json(path)
        if doc is _NOT_JSON:
            raise
        return True, doc, []
    if bad:  # a document spread over lines (pretty-printed) reads as bad lines
        doc = _whole_json(path)
        return (True, doc, []) if doc is not _NOT_JSON else (False, rows, bad)
    if len(rows) == 1:
        return True, rows[0], []
    return False, rows, bad


# ---------------------------------------------------------------- JSON values
def is_int(v: Any) -> bool:
    """An integer, and not a bool (json and Python both let True pass as 1)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite real number, not a bool (Python's json reads NaN and Infinity)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def path_inside(root: str | os.PathLike, name: str | os.PathLike) -> Path:
    """`root / name` for a name an input file gave (a video, a deck, a model's artifact), which must
    stay inside `root`: an absolute name, one that climbs out with `..`, or one naming `root` itself
    raises ValueError.  The check is on the names, not on resolved links: a dataset folder whose
    files link to a bigger disk is how large copies are commonly set up."""
    text = os.fspath(name)
    rel = Path(os.path.normpath(text)) if text else Path(".")
    if rel.is_absolute() or rel.parts[:1] == ("..",) or rel == Path("."):
        raise ValueError(f"{text!r} is not a path inside {root}")
    return Path(root) / rel


def relative_posix(path: Path, root: Path) -> str:
    """`path` relative to `root` with forward slashes; as given when it lies outside `root`."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # e.g. a videos_dir given as an absolute path elsewhere
        return path.as_posix()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in a temporary sibling; on success swap it into place.

    The previous directory (if any) stays intact until the new one is complete.
    Leftover temporaries from a killed run are removed on the next call.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.building-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.building-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes it private; the output should read like any other folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock, across processes, for a read-modify-write of `path` (held until the
    block ends).  It is taken on the file's folder: every atomic write replaces the file itself,
    so a lock on the file would guard an inode that is no longer there; and no lock file is left."""
    import fcntl

    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def project_root() -> Path:
    """The project a command works on: the nearest folder at or above the working directory that
    holds dvc.yaml (a stage, or a command started in a subfolder), else the checkout this package
    runs from, else the working directory.  Project paths (the GX suites, the review decisions,
    the model cache) then name the same files wherever a command is started."""
    here = Path.cwd()
    checkout = Path(__file__).resolve().parents[3]
    for folder in (here, *here.parents, checkout):
        if (folder / "dvc.yaml").is_file():
            return folder
    return here


def files_md5(paths: Iterable[str | os.PathLike]) -> str:
    """md5 of the bytes of the given files, in order (a video, a document's pages, a dataset file)."""
    h = hashlib.md5()
    for path in paths:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def folder_fingerprint(path: str | os.PathLike, block: int = 1 << 16) -> str:
    """A cheap content hash of a checkpoint folder, for cache keys: every file's relative path and
    size, small files whole and large ones (weights) by three sampled blocks, so a retrained or
    rebuilt model misses the cache without reading 16 GB.  Dotfiles are left out."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and not q.name.startswith(".")):
        size = p.stat().st_size
        h.update(f"{p.relative_to(root).as_posix()}:{size}:".encode())
        with open(p, "rb") as fh:
            if size <= 1 << 20:
                h.update(fh.read())
                continue
            for offset in (0, size // 2, max(0, size - block)):
                fh.seek(offset)
                h.update(fh.read(block))
    return h.hexdigest()


_RUST_IO_ERROR = re.compile(
    r"os error (\d+)"
)  # how Rust-backed writers (safetensors, tokenizers) report errno


def os_error_in(exc: BaseException) -> OSError | None:
    """The operating-system error behind `exc`, if there is one: `exc` itself, one it was raised
    from, or an errno in the message of a Rust-backed library's error (safetensors reports a
    full disk as "SafetensorError: ... (os error 28)")."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            return current
        found = _RUST_IO_ERROR.search(str(current))
        if found:
            code = int(found.group(1))
            return OSError(code, os.strerror(code))
        current = current.__cause__ or current.__context__
    return None
