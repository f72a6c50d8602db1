"""``WEB_DATA_DIR``: made at first start (mode 0700, its files 0600), and refused at start when the relay
cannot write there."""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from services.common.service import StartupError
from services.web.auth import Sessions, secret_key
from services.web.const import DATABASE_FILE, SESSIONS_FILE
from services.web.events import EventStore
from services.web.files import private_dir
from services.web.settings import WebSettings


@dataclass(frozen=True)
class DataDir:
    store: EventStore  # repaired after a crash
    secret_key: str  # signs the session cookies
    sessions: Sessions  # the signed-in sessions


def open_data_dir(settings: WebSettings, logger: logging.Logger) -> DataDir:
    path = settings.web_data_dir
    try:
        private = private_dir(path)
    except OSError as error:
        raise StartupError("WEB_DATA_DIR", f"cannot create it: {reason(error, path)}", path) from error
    try:
        # Found now rather than at the first event, which could then not be stored.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise StartupError("WEB_DATA_DIR", f"cannot write in it: {error.strerror}", path) from error
    if not private:
        logger.warning("%s belongs to another user: its mode stays %o", path, path.stat().st_mode & 0o777)
    try:
        key = secret_key(settings, path)
        sessions = Sessions(path / SESSIONS_FILE)
        store = EventStore(path, logger)
        store.cleanup()
    except OSError as error:
        raise StartupError("WEB_DATA_DIR", reason(error, path), path) from error
    except sqlite3.Error as error:
        raise StartupError("WEB_DATA_DIR", f"{DATABASE_FILE}: {error}", path) from error
    return DataDir(store, key, sessions)


def reason(error: OSError, path: Path) -> str:
    """The system's reason, and the file when it is not the directory itself."""
    if isinstance(error, FileExistsError | NotADirectoryError):
        said = "a file is in the way"
    else:
        said = error.strerror or str(error)
    return said if error.filename is None or Path(error.filename) == path else f"{said}: {error.filename}"
