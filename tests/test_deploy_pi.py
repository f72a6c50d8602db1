"""The Raspberry Pi's compose files, checked as far as a machine without a Pi and without Docker can: which
services each camera choice starts, that the module's stream stays inside unless published with a
password, that the module's settings reach MediaMTX, and that the docs name every file and device."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from services.camera.settings import redact, source_kind
from tests.support import REPO_ROOT
from tests.test_deploy import env_example, interpolate

PI_FILE, RTSP_FILE = "docker-compose.pi.yml", "docker-compose.pi-rtsp.yml"
MEDIAMTX_CONFIG = REPO_ROOT / "mediamtx" / "mediamtx.yml"
DEPLOY_DOC = REPO_ROOT / "docs" / "deploy.md"
# PI_CAMERA_* in .env -> the key of MediaMTX's path `cam` it sets.
MODULE_SETTINGS = {
    "PI_CAMERA_WIDTH": "rpiCameraWidth",
    "PI_CAMERA_HEIGHT": "rpiCameraHeight",
    "PI_CAMERA_FPS": "rpiCameraFPS",
}


def compose(name: str, env: dict[str, str]) -> dict[str, Any]:
    """The file as Compose sees it with ``env`` as .env."""
    document: dict[str, Any] = yaml.safe_load(interpolate((REPO_ROOT / name).read_text(), env))
    return document


def started(services: dict[str, Any], profiles: str) -> set[str]:
    """What `docker compose up` starts with COMPOSE_PROFILES=``profiles``."""
    wanted = set(profiles.split(","))
    return {
        name for name, spec in services.items() if not spec.get("profiles") or wanted & set(spec["profiles"])
    }


def mediamtx_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(MEDIAMTX_CONFIG.read_text())
    return config


def test_one_setting_chooses_the_usb_webcam_or_the_camera_module() -> None:
    example = env_example()
    services = compose(PI_FILE, example)["services"]
    assert example["COMPOSE_PROFILES"] == "usb"
    assert started(services, "usb") == {"camera"}
    assert started(services, "module") == {"camera-module", "mediamtx"}
    assert started(services, "module,detector") == {"camera-module", "mediamtx", "detector"}
    assert "/dev/video0:/dev/video0" in services["camera"]["devices"]
    module = services["camera-module"]
    # The module is read by MediaMTX, not as a video device; the camera service reads MediaMTX's stream.
    assert module["devices"] == ["/dev/snd:/dev/snd"] and module["depends_on"] == ["mediamtx"]
    assert source_kind(module["environment"]["CAMERA_SOURCE"]) == "stream"
    assert module["environment"]["CAMERA_SOURCE"] == "rtsp://mediamtx:8554/cam"
    assert module["build"] == services["camera"]["build"] and module["env_file"] == ".env"
    assert re.fullmatch(r"bluenviron/mediamtx:\d+\.\d+\.\d+-rpi", services["mediamtx"]["image"])


@pytest.mark.parametrize(
    "values", [{}, {"PI_CAMERA_WIDTH": "2304", "PI_CAMERA_HEIGHT": "1296", "PI_CAMERA_FPS": "15"}]
)
def test_the_modules_resolution_and_frame_rate_reach_mediamtx(values: dict[str, str]) -> None:
    env = {**env_example(), **values}
    environment = compose(PI_FILE, env)["services"]["mediamtx"]["environment"]
    path = mediamtx_config()["paths"]["cam"]
    assert path["source"] == "rpiCamera"
    for setting, key in MODULE_SETTINGS.items():
        # MediaMTX reads MTX_PATHS_<PATH>_<KEY> over the config file's paths.<path>.<key>.
        variable = f"MTX_PATHS_CAM_{key.upper()}"
        assert environment[variable] == env[setting]
        # Without .env, the config file's own value is the documented default.
        assert str(path[key]) == env_example()[setting]
    assert {v for v in environment if v.startswith("MTX_PATHS_")} == {
        f"MTX_PATHS_CAM_{key.upper()}" for key in MODULE_SETTINGS.values()
    }


def test_the_modules_stream_stays_inside_unless_published_with_a_password() -> None:
    mediamtx = compose(PI_FILE, env_example())["services"]["mediamtx"]
    assert "ports" not in mediamtx and "network_mode" not in mediamtx
    config = mediamtx_config()
    assert config["rtspTransports"] == ["tcp"]
    assert not any(config[server] for server in ("rtmp", "hls", "webrtc", "srt", "api", "metrics", "pprof"))
    # One user, who may read the camera and nothing else (no publishing into it, no API).
    [user] = config["authInternalUsers"]
    assert user["permissions"] == [{"action": "read", "path": "cam"}]

    with pytest.raises(KeyError, match="PI_CAMERA_RTSP_PASSWORD"):
        compose(RTSP_FILE, env_example())
    published = compose(RTSP_FILE, {**env_example(), "PI_CAMERA_RTSP_PASSWORD": "s3cretpass"})["services"]
    assert published["mediamtx"]["ports"] == ["8554:8554"]
    # The override turns user 0 (MTX_AUTHINTERNALUSERS_0_*) into a named user with the password.
    assert published["mediamtx"]["environment"] == {
        "MTX_AUTHINTERNALUSERS_0_USER": "sentrycam",
        "MTX_AUTHINTERNALUSERS_0_PASS": "s3cretpass",
    }
    source = published["camera-module"]["environment"]["CAMERA_SOURCE"]
    assert source == "rtsp://sentrycam:s3cretpass@mediamtx:8554/cam"
    assert redact(source) == "rtsp://sentrycam:***@mediamtx:8554/cam"  # what info and the log show


def test_the_deploy_doc_names_every_file_device_and_image_of_the_pi_files() -> None:
    doc = DEPLOY_DOC.read_text()
    named: set[str] = {PI_FILE, RTSP_FILE, "COMPOSE_PROFILES", *MODULE_SETTINGS}
    for name in (PI_FILE, RTSP_FILE):
        for spec in compose(name, {**env_example(), "PI_CAMERA_RTSP_PASSWORD": "x"})["services"].values():
            named |= {device.split(":")[0] for device in spec.get("devices", [])}
            named |= {volume.split(":")[0].removeprefix("./") for volume in spec.get("volumes", [])}
            named |= {mount.split(":")[0] for mount in spec.get("tmpfs", [])}
            named |= {spec["image"]} if "image" in spec and "sentrycam" not in spec["image"] else set()
            named |= {"privileged"} if spec.get("privileged") else set()
    missing = sorted(item for item in named if f"`{item}" not in doc)
    assert missing == []
