"""Run the camera service: ``python -m services.camera``."""

from __future__ import annotations

from services.camera.handler import Camera
from services.camera.settings import CameraSettings
from services.common.service import run_service

if __name__ == "__main__":
    run_service(CameraSettings, Camera)
