"""``python -m services.detector``: detect objects on camera frames and publish events over MQTT."""

from __future__ import annotations

import sys

from services.common.service import run_service
from services.detector.const import GIL_SWITCH_INTERVAL_S
from services.detector.handler import DetectorHandler
from services.detector.settings import DetectorSettings

if __name__ == "__main__":
    # The interpreter releases the GIL while it runs; when it returns, the worker must get the GIL back
    # from the network and preparing threads quickly, not after Python's default 5 ms switch interval.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    run_service(DetectorSettings, DetectorHandler)
