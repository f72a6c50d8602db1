"""Run the camera service: ``python -m services.camera``."""

from __future__ import annotations

import shutil

from services.camera.const import SERVICE
from services.camera.handler import Camera
from services.camera.settings import CameraSettings
from services.common.service import stop_on_signals
from services.common.settings import load_settings, setup_logging


def main() -> None:
    settings = load_settings(CameraSettings, SERVICE)
    logger = setup_logging(SERVICE, settings.log_level)
    stop = stop_on_signals()
    if shutil.which(settings.player_argv[0]) is None:
        # Not fatal: a camera without a speaker is still a camera.
        logger.warning("alarm player %r not found; the alarm cannot sound", settings.player_argv[0])
    logger.info("camera %s starting (source %s)", settings.camera_id, settings.kind)
    Camera(settings, logger).run(stop)


if __name__ == "__main__":
    main()
