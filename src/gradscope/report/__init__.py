"""Renderers: each takes a ``Report`` and returns or prints text. No torch, no model, no diagnosis here.

``write_atomic`` puts a rendered report on disk without ever leaving a half-written file behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from ..errors import OutputError
from .json import render_json
from .markdown import render_markdown
from .terminal import render_terminal

__all__ = ["render_terminal", "render_markdown", "render_json", "write_atomic"]


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` completely or not at all; on failure an old file keeps its content.

    Special files (``/dev/stdout``, pipes, devices) cannot be replaced atomically; they are written in place.
    Raises ``OutputError("cannot write PATH: reason")`` on any OS failure.
    """
    target = Path(path)
    try:
        info: os.stat_result | None = os.stat(target)
    except OSError:
        info = None  # missing (or unreachable): the temp-file path below reports the real reason
    if _is_special(target, info):
        _write_special(target, text)
        return
    # Replace the file a symlink points to, not the link itself.
    real = Path(os.path.realpath(target))
    fd: int | None = None
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
        # mkstemp creates 0600; give the file the mode it would have had (or already has), so replacing it
        # changes only its content.
        os.chmod(tmp, (info.st_mode & 0o7777) if info is not None else 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            fd = None  # the file object owns it now and closes it on the way out
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, real)
        tmp = None
    except (OSError, ValueError) as exc:  # ValueError: text that cannot be encoded (lone surrogates)
        raise OutputError(f"cannot write {target}: {_reason(exc)}") from exc
    finally:
        # Any way out without a completed replace (Ctrl-C included) removes the temp file.
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _fsync_dir(real.parent)


def _is_special(target: Path, info: os.stat_result | None) -> bool:
    if info is not None and not stat.S_ISREG(info.st_mode):
        return True
    # /dev/stdout redirected to a file stats as a regular file, but replacing what it resolves to would swap
    # the inode under the shell's open descriptor (or create a file named "... (deleted)"): write through.
    return str(target.absolute()).startswith(("/dev/", "/proc/"))


def _write_special(target: Path, text: str) -> None:
    try:
        with open(target, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
    except (OSError, ValueError) as exc:
        raise OutputError(f"cannot write {target}: {_reason(exc)}") from exc


def _umask() -> int:
    # The only portable way to read the umask is to set it and put it back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; best effort, as some file systems refuse to fsync a directory.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__
