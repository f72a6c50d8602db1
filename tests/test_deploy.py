"""Deployment files, checked as far as a machine without a Docker engine can: the compose files against the
Compose Specification schema, every file they name, every setting they pass, the Dockerfiles (hadolint and
what the tests rely on), and the healthchecks against the real broker."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scripts import envfile
from scripts.localbroker import LocalBroker, free_port
from services.common import topics
from services.common.mqtt import MqttClient
from services.common.settings import ServiceSettings
from tests.support import REPO_ROOT, Collector, ServiceProcess, relay_mqtt_env, service_settings

COMPOSE_FILES = [
    "docker-compose.yml",
    "docker-compose.pi.yml",
    "docker-compose.pi-rtsp.yml",
    "docker-compose.tls.yml",
]
SERVICES = ("camera", "detector", "notifier", "recorder", "web")
# Variables a container gets that are not SentryCam settings: read by the base image or the C library.
SYSTEM_VARIABLES = {"TZ"}
# Other programs' own settings, by compose service (tests/test_deploy_pi.py checks MediaMTX's).
FOREIGN_PREFIXES = {"mediamtx": "MTX_"}
VARIABLE_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def compose_schema() -> dict[str, Any]:
    """The Compose Specification schema (compose-spec/compose-spec, schema/compose-spec.json) as vendored
    by check-jsonschema, so it is pinned by a package version and needs no network."""
    vendored = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema: dict[str, Any] = json.loads(vendored.read_text())
    return schema


def load_compose(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO_ROOT / name).read_text())
    return document


def env_example() -> dict[str, str]:
    values = {}
    for line in (REPO_ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (the forms these files use)."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        value = env.get(name, "")
        if operator in (":?", "?") and not value:
            raise KeyError(f"{name} is required: {argument}")
        if operator in (":-", "-") and not value:
            return argument
        return value

    return VARIABLE_RE.sub(substitute, text).replace("$$", "$")


def service_settings_class(compose_service: str) -> type[ServiceSettings] | None:
    """The settings class of the SentryCam service a compose service runs (camera-usb runs the camera)."""
    name = compose_service.split("-", maxsplit=1)[0]
    if name not in SERVICES:
        return None
    for settings_class in envfile.settings_classes():
        if settings_class.__module__ == f"services.{name}.settings":
            return settings_class
    raise AssertionError(f"services/{name}/settings.py has no settings class")


def all_services() -> list[tuple[str, str, dict[str, Any]]]:
    return [(f, name, spec) for f in COMPOSE_FILES for name, spec in load_compose(f)["services"].items()]


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_files_follow_the_compose_specification(name: str) -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    raw = (REPO_ROOT / name).read_text()
    # Before and after interpolation with the values a first-time user has (.env.example + passwords).
    env = {
        **env_example(),
        "DETECTOR_MQTT_PASSWORD": "x",
        "NOTIFIER_MQTT_PASSWORD": "x",
        "RECORDER_MQTT_PASSWORD": "x",
        "WEB_MQTT_PASSWORD": "x",
        "PI_CAMERA_RTSP_PASSWORD": "x",
    }
    for document in (yaml.safe_load(raw), yaml.safe_load(interpolate(raw, env))):
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)
        ]
        assert errors == []
    # The schema is live: an unknown key is an error.
    assert list(validator.iter_errors({"services": {"web": {"image": "x", "portz": []}}}))


def test_the_server_file_has_what_a_first_install_needs() -> None:
    compose = load_compose("docker-compose.yml")
    services = compose["services"]
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert "./mosquitto/config:/mosquitto/config:ro" in services["mosquitto"]["volumes"]
    assert set(compose["volumes"]) == {
        "mosquitto-data",
        "detector-data",
        "notifier-data",
        "recordings",
        "web-data",
    }
    for name in ("detector", "notifier", "recorder", "web", "camera", "camera-usb"):
        spec = services[name]
        assert spec["restart"] == "unless-stopped", name
        assert spec["depends_on"] == {"mosquitto": {"condition": "service_healthy"}}, name
        assert spec["env_file"] == ".env", name
        assert spec["environment"]["MQTT_HOST"] == "mosquitto", name
    logins = ("detector", "notifier", "recorder", "web")
    assert {services[n]["environment"]["MQTT_USERNAME"] for n in logins} == set(logins)
    # The detector keeps each camera's zones (its last good config/set) in a volume of its own.
    assert services["detector"]["volumes"] == ["detector-data:/data"]
    assert services["detector"]["environment"]["DETECTOR_DATA_DIR"] == "/data"
    # The recorder writes the recordings, the relay only reads them (WEB_RECORD_DIR).
    assert services["recorder"]["volumes"] == ["recordings:/data/recordings"]
    assert services["recorder"]["environment"]["RECORD_DIR"] == "/data/recordings"
    assert "recordings:/data/recordings:ro" in services["web"]["volumes"]
    assert services["web"]["environment"]["WEB_RECORD_DIR"] == "/data/recordings"
    assert services["camera"]["profiles"] == ["camera"] and services["camera-usb"]["profiles"] == [
        "camera-usb"
    ]
    assert "healthcheck" in services["mosquitto"]
    pi = load_compose("docker-compose.pi.yml")["services"]
    assert {"/dev/video0:/dev/video0", "/dev/snd:/dev/snd"} <= set(pi["camera"]["devices"])
    assert pi["detector"]["profiles"] == ["detector"] and pi["detector"]["platform"] == "linux/arm64"


def test_every_file_a_compose_file_names_exists() -> None:
    missing = []
    for compose_file, name, spec in all_services():
        build = spec.get("build")
        if build:
            context = REPO_ROOT / build["context"]
            if not context.is_dir() or not (context / build["dockerfile"]).is_file():
                missing.append(f"{compose_file} {name}: build {build}")
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and not (REPO_ROOT / source).exists():
                missing.append(f"{compose_file} {name}: volume source {source}")
        if "env_file" in spec:
            # .env is the user's own copy of .env.example, never in git.
            assert spec["env_file"] == ".env"
            assert (REPO_ROOT / ".env.example").is_file()
    assert missing == []
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO_ROOT)
    assert ignored.returncode == 0, ".env (passwords) must stay out of git"


def test_every_setting_a_compose_file_passes_exists() -> None:
    unknown = []
    for compose_file, name, spec in all_services():
        settings_class = service_settings_class(name)
        known = SYSTEM_VARIABLES | (
            {f.upper() for f in settings_class.model_fields} if settings_class else set()
        )
        prefix = FOREIGN_PREFIXES.get(name, "\0")
        unknown += [
            f"{compose_file} {name}: {key}"
            for key in spec.get("environment", {})
            if key not in known and not key.startswith(prefix)
        ]
    assert unknown == []


def test_every_variable_a_compose_file_reads_is_in_env_example() -> None:
    example = env_example()
    compose_variables = {name for name, _default, _meaning in envfile.COMPOSE_VARIABLES}
    for compose_file in COMPOSE_FILES:
        used = set(VARIABLE_RE.findall((REPO_ROOT / compose_file).read_text()))
        for name, _operator, _argument in used:
            assert name in example, f"{compose_file} reads {name}, which .env.example lacks"
            assert (
                name in compose_variables
                or name in SYSTEM_VARIABLES
                or any(name.lower() in c.model_fields for c in envfile.settings_classes())
            ), name


def test_every_settings_field_is_in_env_example() -> None:
    example = env_example()
    missing = [
        f"{c.__name__}.{field}"
        for c in envfile.settings_classes()
        for field in c.model_fields
        if field.upper() not in example
    ]
    assert missing == []
    assert {f"services.{s}.settings" for s in SERVICES} <= {c.__module__ for c in envfile.settings_classes()}


@pytest.mark.parametrize("compose_service", ["detector", "notifier", "recorder", "web", "camera"])
def test_a_container_configured_from_env_example_starts_with_valid_settings(compose_service: str) -> None:
    """What a container gets: .env (a copy of .env.example, with the passwords filled in) under the compose
    file's environment. Every service must accept it."""
    spec = load_compose("docker-compose.yml")["services"][compose_service]
    # What docs/deploy.md has the user fill in before the first start.
    filled = {
        f"{compose_service.upper()}_MQTT_PASSWORD": "secret",
        "CAMERA_ID": "front",
        "WEB_PASSWORD": "a long enough password",
    }
    example = {**env_example(), **filled}
    environment = {k: interpolate(str(v), example) for k, v in spec["environment"].items()}
    settings_class = service_settings_class(compose_service)
    assert settings_class is not None
    env = {k: v for k, v in {**example, **environment}.items() if k not in SYSTEM_VARIABLES}
    code = (
        "import json, os, sys\n"
        f"from {settings_class.__module__} import {settings_class.__name__} as S\n"
        "print(json.dumps(S().model_dump(mode='json'), default=str))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT), **env},
        cwd="/",
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout)
    assert loaded["mqtt_host"] == "mosquitto"
    assert loaded["mqtt_username"] == spec["environment"]["MQTT_USERNAME"].replace("${CAMERA_ID:-}", "front")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


@pytest.mark.parametrize("service", SERVICES)
def test_each_dockerfile_runs_its_service_the_way_the_tests_do(service: str) -> None:
    dockerfile = REPO_ROOT / "services" / service / "Dockerfile"
    instructions = dockerfile_instructions(dockerfile)
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    commands = [json.loads(args) for op, args in final if op == "CMD"]
    assert commands == [["python", "-m", f"services.{service}"]]
    assert (REPO_ROOT / "services" / service / "__main__.py").is_file()
    args = dict(instructions)
    assert args["ARG"] == "PYTHON_IMAGE=python:3.11-slim-bookworm"
    assert [a for op, a in instructions if op == "FROM"] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    user = [a for op, a in final if op == "USER"]
    assert user and user[-1].split(":")[0] not in {"0", "root"}
    health = [a for op, a in final if op == "HEALTHCHECK"]
    assert len(health) == 1 and '"-m", "services.common.healthcheck"' in health[0]
    installs = " ".join(a for op, a in instructions if op == "RUN" and "pip install" in a)
    assert f"-r services/{service}/requirements.txt" in installs
    # The same file the tests install: requirements-dev.txt -> requirements.txt -> services/<name>.
    assert f"-r services/{service}/requirements.txt" in (REPO_ROOT / "requirements.txt").read_text()
    assert "-r requirements.txt" in (REPO_ROOT / "requirements-dev.txt").read_text()
    allowed = [
        line[1:].rstrip("/") for line in (REPO_ROOT / ".dockerignore").read_text().split() if line[0] == "!"
    ]
    for op, copy in final:
        if op == "COPY" and not copy.startswith("--from"):
            for source in shlex.split(copy)[:-1]:
                assert any(source.startswith(a) for a in allowed), f"{source} is excluded by .dockerignore"
                assert (REPO_ROOT / source).exists(), source


# The setting naming each service's data directory, which the server's compose file puts on a named volume.
DATA_SETTINGS = {
    "detector": "DETECTOR_DATA_DIR",
    "notifier": "NOTIFY_DATA_DIR",
    "recorder": "RECORD_DIR",
    "web": "WEB_DATA_DIR",
}


# Each compose file's services that keep data: the server's, and the detector of a Pi without a server.
DATA_SERVICES = [
    *(("docker-compose.yml", service, setting) for service, setting in DATA_SETTINGS.items()),
    ("docker-compose.pi.yml", "detector", DATA_SETTINGS["detector"]),
]


@pytest.mark.parametrize(("compose_file", "service", "setting"), DATA_SERVICES)
def test_each_data_volume_is_a_directory_the_image_makes_for_its_user(
    compose_file: str, service: str, setting: str
) -> None:
    """A named volume starts as a copy of the image's directory, owner included: a directory the image
    lacks becomes root's, and the service (user 10001) could not write it. The compose file, the image's
    ENV and its VOLUME agree on where the data goes."""
    compose = load_compose(compose_file)
    spec = compose["services"][service]
    path = spec["environment"][setting]
    named = [v.split(":") for v in spec["volumes"] if not v.startswith((".", "/"))]
    volume = [name for name, target, *_ in named if target == path]
    assert volume, f"{compose_file} {service}: no named volume on {path}"
    assert volume[0] in compose["volumes"], f"{compose_file}: volume {volume[0]} is not declared"
    instructions = dockerfile_instructions(REPO_ROOT / "services" / service / "Dockerfile")
    assert ("ENV", f"{setting}={path}") in instructions
    assert ("VOLUME", path) in instructions
    made = " ".join(a for op, a in instructions if op == "RUN" and "mkdir" in a)
    assert re.search(rf"mkdir (-p )?{re.escape(path)}\b", made) and "chown" in made, made


def test_the_detector_image_fetches_and_checks_the_default_model() -> None:
    instructions = dockerfile_instructions(REPO_ROOT / "services" / "detector" / "Dockerfile")
    assert ("RUN", "python -m scripts.fetch_model --dest /models") in instructions
    assert ("ENV", "DETECTOR_MODEL=/models/detect.tflite") in instructions
    fetch_model = (REPO_ROOT / "scripts" / "fetch_model.py").read_text()
    assert "e4b118e5e4531945de2e659742c7c590f7536f8d0ed26d135abcfe83b4779d13" in fetch_model


def test_hadolint_finds_nothing_in_the_dockerfiles() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    dockerfiles = [str(REPO_ROOT / "services" / s / "Dockerfile") for s in SERVICES]
    done = subprocess.run(
        [hadolint, "--config", str(REPO_ROOT / ".hadolint.yaml"), "--no-color", *dockerfiles],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The linter is live: a Dockerfile with known faults fails it.
    bad = subprocess.run(
        [hadolint, "--no-color", "-"],
        input="FROM python\nRUN cd /tmp && apt-get install curl\n",
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "DL3006" in bad.stdout


def run_healthcheck(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.common.healthcheck", *args],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT), **env},
        cwd="/",
        capture_output=True,
        text=True,
    )


def test_service_healthcheck_is_healthy_only_while_connected_to_the_broker(broker: LocalBroker) -> None:
    client = MqttClient(
        service_settings(broker, "web"),
        client_id=f"health-{uuid.uuid4().hex[:8]}",
        status_topic=topics.service_status("web"),
        logger=logging.getLogger("health-test"),
    )
    client.start()
    try:
        assert client.connected.wait(10)
        assert run_healthcheck({"MQTT_PORT": str(broker.port)}).returncode == 0
    finally:
        client.stop()
    nobody = run_healthcheck({"MQTT_PORT": str(free_port())})
    assert nobody.returncode == 1 and "no connection to the broker" in nobody.stderr


def test_the_brokers_healthcheck_command_tells_up_from_down(broker: LocalBroker) -> None:
    command = load_compose("docker-compose.yml")["services"]["mosquitto"]["healthcheck"]["test"]
    assert command[0] == "CMD-SHELL"
    shell = command[1].replace("$$", "$")
    up = shell.replace("-p 1883", f"-p {broker.port}")
    down = shell.replace("-p 1883", f"-p {free_port()}")
    assert subprocess.run(["sh", "-c", up]).returncode == 0
    assert subprocess.run(["sh", "-c", down]).returncode != 0


def test_web_healthcheck_asks_the_real_web_relay(
    broker: LocalBroker, service: Callable[[str, dict[str, str]], ServiceProcess], tmp_path: Path
) -> None:
    port = free_port()
    web = service(
        "web",
        {
            **relay_mqtt_env(broker, tmp_path / "web-data"),
            "WEB_HOST": "127.0.0.1",
            "WEB_PORT": str(port),
            "WEB_PASSWORD": "correct horse battery staple",
            "WEB_DATA_DIR": str(tmp_path / "web-data"),
        },
    )
    env = {"MQTT_PORT": str(broker.port), "WEB_PORT": str(port)}
    # A connection to the broker that outlives the web relay, so the last check fails on HTTP alone.
    bystander = Collector(broker, port=broker.port)
    deadline = time.monotonic() + 20
    while (result := run_healthcheck(env, "--web")).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert result.returncode == 0, result.stderr + web.log[-2000:]
    assert web.stop() == 0
    stopped = run_healthcheck(env, "--web")
    bystander.close()
    assert stopped.returncode == 1 and f"no answer on http://127.0.0.1:{port}/healthz" in stopped.stderr
