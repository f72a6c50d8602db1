"""``python -m services.recorder``: event clips and continuous recording, until SIGTERM or Ctrl-C."""

from __future__ import annotations

from services.common.service import run_service
from services.recorder.handler import Recorder
from services.recorder.settings import RecorderSettings

if __name__ == "__main__":
    run_service(RecorderSettings, Recorder)
