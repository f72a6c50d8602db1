"""``WEB_DATA_DIR``: made at first start, and refused at start when the relay cannot write there."""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from pathlib import Path

from services.common.service import StartupError
from services.web.auth import secret_key
from services.web.const import DATABASE_FILE
from services.web.events import EventStore
from services.web.settings import WebSettings


def open_data_dir(settings: WebSettings, logger: logging.Logger) -> tuple[EventStore, str]:
    """The event store, repaired after a crash, and the key that signs session cookies."""
    path = settings.web_data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StartupError("WEB_DATA_DIR", f"cannot create it: {reason(error, path)}", path) from error
    try:
        # Found now rather than at the first event, which could then not be stored.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise StartupError("WEB_DATA_DIR", f"cannot write in it: {error.strerror}", path) from error
    try:
        key = secret_key(settings, path)
        store = EventStore(path, logger)
        store.cleanup()
    except OSError as error:
        raise StartupError("WEB_DATA_DIR", reason(error, path), path) from error
    except sqlite3.Error as error:
        raise StartupError("WEB_DATA_DIR", f"{DATABASE_FILE}: {error}", path) from error
    return store, key


def reason(error: OSError, path: Path) -> str:
    """The system's reason, and the file when it is not the directory itself."""
    if isinstance(error, FileExistsError | NotADirectoryError):
        said = "a file is in the way"
    else:
        said = error.strerror or str(error)
    return said if error.filename is None or Path(error.filename) == path else f"{said}: {error.filename}"
