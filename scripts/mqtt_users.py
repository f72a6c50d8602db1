"""Create or update broker users and print the lines for ``.env``.

    python -m scripts.mqtt_users services                    # every service user: lines for the server's .env
    python -m scripts.mqtt_users service detector            # one service user, random password
    python -m scripts.mqtt_users camera front                # user cam-front, with its ACL block
    python -m scripts.mqtt_users camera front --remove       # drop the user and its ACL block
    python -m scripts.mqtt_users detector b                  # user detector-b: a further detector instance
    python -m scripts.mqtt_users detector b --remove

Passwords are hashed into ``mosquitto/config/passwd`` by ``mosquitto_passwd``; the broker reloads both files
on SIGHUP (``docker compose kill -s HUP mosquitto``). Service passwords go in the server's ``.env`` as
``<SERVICE>_MQTT_PASSWORD`` (docker-compose.yml hands each container its own); a camera's login goes in the
``.env`` of the machine that runs it, as ``MQTT_USERNAME`` and ``MQTT_PASSWORD``.

The broker binds each login to its client id (``use_username_as_clientid``), so two processes with one login
drop each other: a second detector instance gets a login of its own, ``detector-<name>``, whose ACL block is a
copy of the ``detector`` user's (docs/deploy.md, "A second detector").
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from services.common import topics

CONFIG_DIR = Path(__file__).resolve().parent.parent / "mosquitto" / "config"
SERVICE_USERS = ("detector", "notifier", "recorder", "web", "homeassistant")
DETECTOR = "detector"
# The blocks scripts write, each kind between its markers in the acl file: "# BEGIN <kind>" / "# END <kind>".
CAMERAS = "cameras"
DETECTORS = "detectors"


def compose_password_variable(service: str) -> str:
    """The variable docker-compose.yml reads a service's broker password from."""
    return f"{service.upper()}_MQTT_PASSWORD"


def env_line(service: str, password: str) -> str:
    """The line for the server's .env; Home Assistant's login goes into its MQTT integration instead."""
    if service == "homeassistant":
        return f"# Home Assistant's MQTT integration: user homeassistant, password {password}"
    return f"{compose_password_variable(service)}={password}"


def camera_user(camera_id: str) -> str:
    return f"cam-{topics.validate_camera_id(camera_id)}"


def camera_acl_block(camera_id: str) -> list[str]:
    """A camera publishes exactly its own frame, status, info, alarm state and alarm result, and reads only
    its own alarm commands: no events, no detection or arming commands, nothing of another camera."""
    return [
        f"user {camera_user(camera_id)}",
        *(
            f"topic write {topic}"
            for topic in (
                topics.frame(camera_id),
                topics.status(camera_id),
                topics.info(camera_id),
                topics.alarm_state(camera_id),
                topics.alarm_result(camera_id),
            )
        ),
        f"topic read {topics.alarm_set(camera_id)}",
    ]


def detector_user(name: str) -> str:
    """The login of a further detector instance: ``detector-<name>``, the name as a camera id is written."""
    if not topics.CAMERA_ID_RE.fullmatch(name):
        raise ValueError(
            f"detector name {name!r} must be 1-32 of a-z 0-9 _ -, starting with a letter or digit"
        )
    return f"{DETECTOR}-{name}"


def user_rules(acl_lines: list[str], user: str) -> list[str]:
    """The ``topic`` lines of ``user``'s block in an acl file (comments and blank lines left out)."""
    try:
        start = acl_lines.index(f"user {user}") + 1
    except ValueError:
        raise ValueError(f"the acl file has no block for user {user}") from None
    rules = []
    for line in acl_lines[start:]:
        if line.startswith(("user ", "pattern ", "# BEGIN ")):
            break
        if line.startswith("topic "):
            rules.append(line)
    return rules


def detector_acl_block(acl_lines: list[str], name: str) -> list[str]:
    """A further detector instance may do what the hand-written ``detector`` user may, no more."""
    return [f"user {detector_user(name)}", *user_rules(acl_lines, DETECTOR)]


def set_acl_block(acl_file: Path, kind: str, user: str, block: list[str] | None) -> None:
    """Write ``user``'s ``block`` (or drop it, when None) between the ``kind``'s BEGIN/END markers, kept
    sorted by user, leaving everything else in the file alone."""
    lines = acl_file.read_text().splitlines()
    begin, end = lines.index(f"# BEGIN {kind}"), lines.index(f"# END {kind}")
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None  # lines before the first user line are comments
    for line in lines[begin + 1 : end]:
        if line.startswith("user "):
            current = blocks.setdefault(line.split()[1], [])
        if line.strip() and current is not None:
            current.append(line)
    blocks.pop(user, None)
    if block is not None:
        blocks[user] = block
    body = [line for name in sorted(blocks) for line in blocks[name]]
    acl_file.write_text("\n".join([*lines[: begin + 1], *body, *lines[end:]]) + "\n")


def set_camera_acl(acl_file: Path, camera_id: str, *, present: bool = True) -> None:
    block = camera_acl_block(camera_id) if present else None
    set_acl_block(acl_file, CAMERAS, camera_user(camera_id), block)


def set_detector_acl(acl_file: Path, name: str, *, present: bool = True) -> None:
    block = detector_acl_block(acl_file.read_text().splitlines(), name) if present else None
    set_acl_block(acl_file, DETECTORS, detector_user(name), block)


def set_password(passwd_file: Path, user: str, password: str) -> None:
    if shutil.which("mosquitto_passwd") is None:
        sys.exit("mosquitto_passwd not found: install the mosquitto package (apt-get install mosquitto)")
    passwd_file.touch(mode=0o600, exist_ok=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd_file), user, password], check=True)


def remove_user(passwd_file: Path, user: str) -> None:
    if passwd_file.exists():
        subprocess.run(["mosquitto_passwd", "-D", str(passwd_file), user], check=True)


def clear_camera_command(camera_id: str) -> str:
    """The command that removes a camera from Home Assistant and the web page: its retained info, cleared
    with the camera's own login (run it before the user is removed)."""
    return (
        f"mosquitto_pub -h <broker> -u {camera_user(camera_id)} -P <its password> "
        f"-t {topics.info(camera_id)} -r -n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kind", choices=["services", "service", "camera", "detector"])
    parser.add_argument(
        "name", nargs="?", help=f"service ({', '.join(SERVICE_USERS)}), camera id, or detector instance name"
    )
    parser.add_argument("--password", help="default: a new random one")
    parser.add_argument("--remove", action="store_true")
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR)
    args = parser.parse_args(argv)

    passwd_file, acl_file = args.config_dir / "passwd", args.config_dir / "acl"
    if args.kind == "services":
        if args.name or args.password or args.remove:
            parser.error("'services' takes no name, --password or --remove")
        print("# Broker users: reload the broker (SIGHUP) to apply, then put these in the server's .env")
        for service in SERVICE_USERS:
            password = secrets.token_urlsafe(18)
            set_password(passwd_file, service, password)
            print(env_line(service, password))
        return
    if not args.name:
        parser.error(f"{args.kind} needs a name")
    if args.kind == "service" and args.name not in SERVICE_USERS:
        parser.error(f"unknown service {args.name!r}; one of {', '.join(SERVICE_USERS)}")
    # Camera and detector-instance users carry an ACL block of their own; service users are hand-written.
    set_acl = {"camera": set_camera_acl, "detector": set_detector_acl}.get(args.kind)
    try:
        user = {"camera": camera_user, "detector": detector_user}.get(args.kind, str)(args.name)
    except ValueError as error:
        parser.error(str(error))
    if args.remove:
        remove_user(passwd_file, user)
        if set_acl is not None:
            set_acl(acl_file, args.name, present=False)
        print(f"removed {user}; reload the broker (SIGHUP) to apply")
        if args.kind == "camera":
            print("# if not done yet, stop the camera, then remove its entities (before the reload):")
            print(f"# {clear_camera_command(args.name)}")
        return
    password = args.password or secrets.token_urlsafe(18)
    set_password(passwd_file, user, password)
    if set_acl is not None:
        set_acl(acl_file, args.name)
    if args.kind == "camera":
        print(f"# {user}: reload the broker (SIGHUP) to apply, then put these in the camera machine's .env")
        print(f"CAMERA_ID={args.name}")
        print(f"MQTT_USERNAME={user}")
        print(f"MQTT_PASSWORD={password}")
        return
    if args.kind == "detector":
        print(f"# {user}: reload the broker (SIGHUP) to apply, then give this detector instance these")
        print("# settings, and DETECTOR_CAMERAS (the cameras it serves); docs/deploy.md, A second detector")
        print(f"DETECTOR_INSTANCE={args.name}")
        print(f"MQTT_USERNAME={user}")
        print(f"MQTT_PASSWORD={password}")
        return
    print(f"# {user}: reload the broker (SIGHUP) to apply, then put this in the server's .env")
    print(env_line(user, password))


if __name__ == "__main__":
    main()
