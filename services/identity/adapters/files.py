"""Small files that hold secrets: written atomically, readable by the owner only (0600); and the
read-only data files shipped with the service.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "COMMON_PASSWORDS_FILE",
    "exclusive_lock",
    "read_lines",
    "read_or_create_secret",
    "write_private",
]

# Django's common-password list, pinned and verified by `python -m tools.common_passwords`.
COMMON_PASSWORDS_FILE = Path(__file__).resolve().parent.parent / "data" / "common-passwords.txt"


def read_lines(path: str | Path) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()


def _temp_beside(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_private(path: str | Path, data: bytes) -> None:
    """Replace `path` atomically: readers see the old or the new content, never a mix."""
    target = Path(path)
    tmp = _temp_beside(target, data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, target)


def read_or_create_secret(path: str | Path) -> str:
    """The secret in `path`, generated on first use. Concurrent first calls agree on one value:
    the file appears complete (hard link of a finished temp file) and only the first link wins.
    """
    target = Path(path)
    try:
        return target.read_text().strip()
    except FileNotFoundError:
        pass
    tmp = _temp_beside(target, secrets.token_urlsafe(48).encode())
    try:
        os.link(tmp, target)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return target.read_text().strip()


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """An advisory lock beside `path`, so CLI runs that rewrite it do not interleave."""
    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
