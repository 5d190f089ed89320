"""Paths of imports and exports: which file may be read, where a file may be written.

* :func:`resolve_path`: the absolute, real path an import reads (``must_exist``) or an export
  writes. With ``allowed_root`` the real path (every symlink followed, ``..`` applied; a
  relative path is taken relative to the root) must be inside the root's real path, so a
  symlink inside the root that points outside is refused like ``..`` or an absolute path
  elsewhere: :class:`~batchray.errors.DocumentError` (``reason`` ``outside_root``) before
  anything is opened. Without a root any path is taken (the Python API); either way a file
  to read must be a regular file (not a directory, FIFO, socket or device: ``not_a_file``).
* :func:`destination_path`: the path an export writes: :func:`resolve_path`'s checks, an
  existing directory or other non-regular file refused (``not_a_file``), an existing file
  refused unless ``overwrite`` (:class:`~batchray.errors.ConflictError`, ``reason``
  ``exists``), and a parent directory that exists.
* :func:`write_aside`: writes a file next to its destination, then moves it into place, so it
  appears complete or not at all; without ``overwrite`` the move is a hard link, which fails
  if a file appeared there meanwhile, so nothing is ever replaced. A file that cannot be
  written there is a :class:`~batchray.errors.DocumentError` (``unwritable``).
* :func:`new_file_beside`: the new file that is written aside, with the permissions of any
  file the user writes (``0o666`` less the umask), not only the owner's.

Error messages name the path as given, never a byte of the file. These checks guard the path a
caller names; they do not defend against someone who can rename directories inside the root,
or swap a checked file for a FIFO, while an import runs.
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Callable, TypeVar, Union

from batchray.errors import ConflictError, DocumentError

T = TypeVar("T")
PathLike = Union[str, os.PathLike]


def resolve_path(path: PathLike, allowed_root: PathLike | None = None, *, must_exist: bool = True) -> Path:
    """The real absolute path to use; :class:`DocumentError` if it leaves ``allowed_root`` (after
    following symlinks and ``..``) or, with ``must_exist``, is not an existing regular file."""
    text = os.fspath(path)
    if ("\x00" if isinstance(text, str) else b"\x00") in text:
        raise DocumentError("a path cannot contain a NUL character", reason="bad_path", path=repr(text)[:200])
    given = Path(text).expanduser()
    if allowed_root is not None:
        try:
            root = Path(os.fspath(allowed_root)).expanduser().resolve(strict=True)
        except OSError:
            raise DocumentError(f"the allowed root {os.fspath(allowed_root)!r} does not exist",
                                reason="bad_root", path=str(given)) from None
        candidate = given if given.is_absolute() else root / given
        resolved = candidate.resolve(strict=False)
        if resolved != root and root not in resolved.parents:
            raise DocumentError(f"path {str(given)!r} is outside the allowed directory {str(root)!r} (a relative "
                                "path is read from there; the tools' I/O root is set with connect(io_root=...), "
                                "--io-root or $BATCHRAY_IO_ROOT)", reason="outside_root", path=str(given),
                                root=str(root))
    else:
        resolved = given.resolve(strict=False)
    if must_exist:
        mode = _mode(resolved)
        if mode is None:
            raise DocumentError(f"file {str(given)!r} does not exist", reason="not_found", path=str(given))
        if not stat.S_ISREG(mode):
            raise DocumentError(f"{str(given)!r} is not a regular file ({_kind(mode)})", reason="not_a_file",
                                path=str(given))
    return resolved


def destination_path(path: PathLike, allowed_root: PathLike | None = None, *, overwrite: bool = False) -> Path:
    """The real path an export may write (see the module docstring); refused before anything is written."""
    out = resolve_path(path, allowed_root, must_exist=False)
    mode = _mode(out)
    if mode is not None:
        if not stat.S_ISREG(mode):
            raise DocumentError(f"{os.fspath(path)!r} is not a regular file ({_kind(mode)})", reason="not_a_file",
                                path=os.fspath(path))
        if not overwrite:
            raise _exists(path)
    if not out.parent.is_dir():
        raise DocumentError(f"directory {str(out.parent)!r} does not exist", reason="not_found", path=os.fspath(path))
    return out


def write_aside(out: Path, write: Callable[[Path], T], *, overwrite: bool) -> T:
    """``write(tmp)`` on a new file next to ``out``, then the file moved to ``out``: replacing
    one there with ``overwrite``, else refused (:class:`ConflictError`) if one appeared. A file
    that cannot be created, written or moved there (a directory not writable, a read-only
    filesystem, a full disk) is a :class:`DocumentError` (``unwritable``) naming ``out``, and
    ``out`` is left as it was."""
    try:
        tmp = new_file_beside(out)
    except OSError as exc:
        raise _unwritable(out, exc) from None
    try:
        result = write(tmp)
        if overwrite:
            os.replace(tmp, out)
        else:
            _place_new(tmp, out)
    except OSError as exc:
        raise _unwritable(out, exc) from None
    finally:
        tmp.unlink(missing_ok=True)
    return result


def new_file_beside(out: Path) -> Path:
    """A new empty file ``.<name>.<random>.tmp`` in ``out``'s directory, created with mode
    ``0o666`` less the umask, as ``open(path, "w")`` creates one (``tempfile.mkstemp`` makes
    it ``0o600``: an export moved into place from it was unreadable to the user's other
    accounts and services, and replacing a file with ``overwrite`` took away their access)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = out.parent / f".{out.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, flags, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(out.parent))


def _unwritable(out: Path, exc: OSError) -> DocumentError:
    return DocumentError(f"cannot write {str(out)!r}: {exc.strerror or type(exc).__name__}", reason="unwritable",
                         path=str(out))


def _place_new(tmp: Path, out: Path) -> None:
    """Give ``tmp``'s file the name ``out`` unless that name exists (checked atomically where
    the filesystem has hard links)."""
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise _exists(out) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(out):  # no hard links here: checked, then renamed
            raise _exists(out) from None
        os.replace(tmp, out)


def _exists(path: PathLike) -> ConflictError:
    return ConflictError(f"{os.fspath(path)!r} exists already; export with overwrite to replace it",
                         reason="exists", path=os.fspath(path), field="overwrite")


def _mode(path: Path) -> int | None:
    try:
        return path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise DocumentError(f"cannot look at {str(path)!r}: {exc.strerror or exc}", reason="unreadable",
                            path=str(path)) from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


__all__ = ["destination_path", "new_file_beside", "resolve_path", "write_aside"]
