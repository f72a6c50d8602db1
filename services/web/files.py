"""Files in ``WEB_DATA_DIR`` are the owner's only: the directories 0700, every file 0600, whatever the umask.

The relay's pictures show the inside of a home and its secret key signs the owner's sessions; another user
of the machine must read none of them. Modes are given when a file is made (never a moment readable) and
tightened at start for what an older version left looser.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from services.web.const import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE


def private_dir(path: Path) -> bool:
    """Make ``path`` (and missing parents) and make it the owner's only; False when it is another user's
    and keeps its mode. OSError when it cannot be made."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    return restrict(path, PRIVATE_DIR_MODE)


def restrict(path: Path, mode: int = PRIVATE_FILE_MODE) -> bool:
    """Set ``mode`` on an existing file or directory; False when it is another user's (it keeps its mode:
    the relay runs as someone allowed to write there, and that is not for the relay to change)."""
    if stat.S_IMODE(path.stat().st_mode) == mode:
        return True
    try:
        path.chmod(mode)
    except PermissionError:
        return False
    return True


def restrict_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            restrict(path)


def create_private(path: Path) -> None:
    """An empty file readable by the owner only, unless it exists (then only its mode is tightened)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
    restrict(path)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` at once (a temporary file, fsync, rename), mode 0600."""
    temporary = path.with_name(f"{path.name}.tmp")
    write_new(temporary, data)
    temporary.rename(path)


def write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (replaced if there), mode 0600, and fsync it. A write that fails (a full
    disk) removes what it wrote: a partial file left behind would only take more of the space that is short,
    once per redelivery of the event."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), PRIVATE_FILE_MODE)  # a leftover temporary may have had another mode
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
