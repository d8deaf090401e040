"""Files written so that a reader never sees them half-done, and files opened only when they
are what they should be.

:func:`atomic_write_bytes` (and ``_text``, ``_json``) writes through a temporary sibling and a
rename; :func:`atomic_directory` does the same for a whole output folder (``--out``);
:func:`open_regular` opens a file for reading only if it is a regular file, naming what it is
otherwise (a FIFO is never waited on). :func:`jsonable` makes results strict JSON.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Union

from torch_svm.errors import DataFormatError, FileAccessError, MissingFileError, clip

__all__: list = []    # internal: used by torch_svm itself

def atomic_write_bytes(path: Union[str, Path], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename,
    so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)          # mkstemp makes 0600; give the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(obj: Any) -> Any:
    """Make floats JSON-safe (inf/NaN become strings) and numpy/torch scalars plain."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def atomic_write_json(path: Union[str, Path], obj: Any) -> Path:
    """Strict JSON (through :func:`jsonable`), written atomically."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n")


_FILE_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def open_regular(path: Union[str, Path], *, expected: str = "a regular file") -> IO[bytes]:
    """``path`` opened for binary reading if it is a regular file.

    Raises MissingFileError when it does not exist, FileAccessError when it cannot be read
    (permissions), and DataFormatError naming what it is when it is a folder, a FIFO, a device
    or a socket. Checked twice: by name first (a socket cannot be opened at all), then on what
    was opened, with O_NONBLOCK so that a FIFO swapped in meanwhile cannot make the open wait.
    """
    shown = clip(str(path), 200)
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISREG(mode):
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            mode = os.fstat(fd).st_mode
            if stat.S_ISREG(mode):
                return os.fdopen(fd, "rb")
            os.close(fd)
    except FileNotFoundError:
        raise MissingFileError(f"{shown} does not exist; expected {expected}") from None
    except OSError as exc:
        raise FileAccessError(f"{shown} cannot be read: {exc.strerror or type(exc).__name__}; "
                              f"expected {expected}") from None
    raise DataFormatError(f"{shown}: is {file_kind(mode)}, not a regular file; expected {expected}")


def file_kind(mode: int) -> str:
    """What an ``os.stat`` mode says a path is: "a regular file", "a folder", "a FIFO", ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")


@contextlib.contextmanager
def atomic_directory(path: Union[str, Path]) -> Iterator[Path]:
    """Write the folder ``path`` so that readers, and runs killed halfway, never see it
    half-written.

    Yields a fresh empty folder ``.<name>.tmp-<pid>-XXXXXXXX`` next to ``path``; write the new
    content there. When the block ends normally it replaces ``path`` whole: the old folder (if
    any) is renamed to ``.<name>.trash-<pid>-XXXXXXXX``, the new one renamed to ``path``, then
    the trash is deleted. When the block raises (or is interrupted), the new folder is deleted
    and ``path`` is left as it was.

    What a reader of ``path`` can rely on: it is the old complete folder or the new complete
    one, never a mix of the two and never a file this run was still writing. Between the two
    renames (microseconds) ``path`` is absent; a run killed exactly there leaves the old folder
    under its trash name, and the next ``atomic_directory(path)`` renames it back first. Files
    of the old folder that the new run does not write are gone afterwards: the folder is
    replaced whole, not merged (copy them into the new folder to keep them).

    On entry, what killed runs left next to ``path`` is cleaned up: ``.<name>.tmp-<pid>-*`` and
    ``.<name>.trash-<pid>-*`` folders whose process is no longer running (names of exactly this
    pattern; a reused pid only delays the cleanup). Not meant for two live runs writing the
    same ``path`` at once (the last to finish wins). This guards against kill -9, not against
    power loss: nothing is fsynced.

    Example::

        with atomic_directory("runs/cifar") as tmp:
            torch.save(model.state_dict(), tmp / "model.pt")
            atomic_write_json(tmp / "metrics.json", metrics)
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise FileAccessError(f"atomic_directory: {str(path)!r} exists and is not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_after_killed_runs(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_sibling_prefix(path, "tmp")))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)          # mkdtemp makes 0700; give the usual mode
        yield tmp
        trash = None
        if path.exists():
            trash = tempfile.mkdtemp(dir=path.parent, prefix=_sibling_prefix(path, "trash"))
            os.rename(path, trash)             # onto the empty folder just made: a name we own
        try:
            os.rename(tmp, path)
        except BaseException:
            if trash is not None:
                os.rename(trash, path)         # the old folder back in place
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def probe_atomic_directory(path: Union[str, Path]) -> None:
    """Make and remove the very siblings :func:`atomic_directory` will make next to ``path``
    (its temporary and trash folders), so a name too long or a folder that cannot be written
    fails now, before any work, with the OSError it would give then."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("tmp", "trash"):
        os.rmdir(tempfile.mkdtemp(dir=path.parent, prefix=_sibling_prefix(path, kind)))


def _sibling_prefix(path: Path, kind: str) -> str:
    """``.<name>.<kind>-<pid>-``: the name of ``path`` kept short enough that the sibling's
    name stays within the 255 bytes a file name may have (a long one is cut and hashed)."""
    return f".{_stem(path)}.{kind}-{os.getpid()}-"


def _stem(path: Path) -> str:
    name = path.name
    if len(name.encode()) <= 160:
        return name
    return (name.encode()[:100].decode(errors="ignore") + "~"
            + hashlib.sha256(name.encode()).hexdigest()[:16])


def _clean_after_killed_runs(path: Path) -> None:
    """Put back an old folder that a killed run left under its trash name (``path`` missing),
    then delete the temporary and trash folders of runs that are no longer running."""
    pattern = re.compile(rf"\.{re.escape(_stem(path))}\.(tmp|trash)-(\d+)-[^/]+\Z")
    for entry in sorted(path.parent.iterdir()):
        match = pattern.match(entry.name)
        if (match is None or entry.is_symlink() or not entry.is_dir()
                or _running(int(match.group(2)))):
            continue
        if match.group(1) == "trash" and not os.path.lexists(path):
            os.rename(entry, path)             # the old complete folder, back in place
        else:
            shutil.rmtree(entry, ignore_errors=True)


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (it may be another user's)."""
    try:
        os.kill(pid, 0)
    except PermissionError:                    # another user's process
        return True
    except (ProcessLookupError, OverflowError):  # gone, or not a pid at all
        return False
    return True
