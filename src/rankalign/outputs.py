"""Output locations: checked before any work, written without a traceback.

Every command that writes a folder of results (``eval``, ``train``, ``demo``) calls
:func:`check_output_dir` first, so a bad path fails at once with one line that names the
path and the fix, instead of a traceback after minutes of generation or training; the
writes themselves go through :func:`writing`, which turns an operating-system refusal (a
full disk, permissions) into the same kind of message.

Files are written with :func:`atomic_path` (a temporary file beside the target, flushed to
disk, then renamed onto it), so a process killed at any moment leaves either the old file
or the complete new one under the final name, never a half-written one.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from rankalign.errors import UserError


def check_output_dir(path: str | os.PathLike[str], option: str, files: Iterable[str] = ()) -> Path:
    """Check that ``path`` is, or can be created as, a writable folder.

    Args:
        path: the output folder.
        option: how the user named it (``"--output-dir"``), used in the message.
        files: names of the files the command writes inside the folder; none may be a folder.
    Returns:
        ``Path(path)``.
    Raises:
        UserError: ``path`` is a file; a parent of it is a file; the nearest existing folder
            cannot be written (probed by creating a temporary file, which also holds for
            root and read-only file systems); one of ``files`` is a folder.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{option} {str(p)!r} is a file, but a folder is expected: remove the file or "
                        "choose another folder")
    check_can_create(p, option)
    for name in files:
        target = p / name
        if target.is_dir():
            raise UserError(f"{option} {str(p)!r}: {str(target)!r} is a folder, but a file is written there; "
                            "remove it or choose another folder")
    return p


def check_can_create(path: str | os.PathLike[str], option: str, *, beside: bool = False) -> None:
    """Check that files can be created in the folder ``path`` (existing or not) or, with
    ``beside=True``, next to ``path`` (an output written as a temporary, then renamed onto it).

    Raises:
        UserError: the closest existing ancestor is a file, or no file can be created in it
            (probed by creating a temporary file, which also holds for root and read-only
            file systems, where ``os.access`` says yes).
    """
    p = Path(path)
    existing = _nearest_existing(p.parent if beside else p)
    if not existing.is_dir():
        raise UserError(f"{option} {str(p)!r} cannot be created: {str(existing)!r} is a file, not a folder; "
                        "choose another location")
    if not _can_create_in(existing):
        raise UserError(f"{option} {str(p)!r} cannot be written: no permission to create files in "
                        f"{str(existing)!r}; choose a writable location")


def _nearest_existing(p: Path) -> Path:
    """``p`` or its closest existing ancestor (``.`` for a relative path whose parents are new)."""
    p = Path(os.path.abspath(p))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _can_create_in(folder: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(prefix=".rankalign-write-check.", dir=folder)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return True


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing under ``path`` into a one-line :class:`UserError`."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or path
        raise UserError(f"could not write {str(where)!r}: {exc.strerror or exc}; free space or choose "
                        "another output location") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success, delete it on error."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file 0600; give the output the mode a plain open() would
        os.chmod(tmp_path, _file_mode(target))
        fsync_path(tmp_path)  # the data is on disk before the name points at it
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a written file to disk (a crash after the rename must not leave it empty)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_mode(target: Path) -> int:
    """The permission bits a new file gets from ``open()`` (0666 minus the umask), or the
    existing target's bits when it is being replaced."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(os.stat(target).st_mode)
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def owned_prefix(base: str) -> str:
    """A temporary-name prefix that carries this process's id (``<base><pid>-``), so a later run
    can tell the leftovers of a killed process (:func:`remove_orphans`) from a live one's."""
    return f"{base}{os.getpid()}-"


def remove_orphans(folder: str | os.PathLike[str], base: str) -> list[str]:
    """Delete the entries of ``folder`` named ``<base><pid>-...`` whose process no longer runs
    (a build killed before it could clean up); returns their names. A one-line notice names them."""
    import shutil

    folder = Path(folder)
    gone = []
    if not folder.is_dir():
        return gone
    for entry in folder.iterdir():
        rest = entry.name[len(base):] if entry.name.startswith(base) else ""
        pid = rest.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            gone.append(entry.name)
    if gone:
        print(f"removed the leftovers of an interrupted run in {folder}: {', '.join(sorted(gone))}", flush=True)
    return sorted(gone)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
