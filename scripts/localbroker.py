"""A real Mosquitto on this machine, configured from the project's ``mosquitto/config`` files.

Used by the test fixtures and by ``scripts/run``: the production ``mosquitto.conf`` and ``acl`` with their
paths and port rewritten to a private work directory, and a password file with one user per service.

The production listener binds every login to its client id (``use_username_as_clientid``), so one login has
one connection at a time. The admin user (tests' subscribers, the runner's ``admin.env``) needs many at once:
it gets a listener of its own here, ``admin_port``, without that binding; the shipped files never have it.
The ACL is the same on both listeners (``per_listener_settings false``).
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from scripts.mqtt_users import (
    CONFIG_DIR,
    SERVICE_USERS,
    camera_user,
    detector_user,
    set_camera_acl,
    set_detector_acl,
    set_password,
    user_rules,
)

TLS_CONF = CONFIG_DIR.parent / "tls.conf"

MOSQUITTO_MISSING = (
    "mosquitto is not installed: on Debian/Ubuntu/Raspberry Pi OS run `sudo apt-get install mosquitto`, "
    "on macOS `brew install mosquitto`"
)
# A user that may do anything: for test subscribers and the local runner's own checks, never in production.
ADMIN_USER = "sentrycam-admin"


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(MOSQUITTO_MISSING)


# Servers here take their ports below Linux's ephemeral range (32768-60999): a port kept across a restart (a
# broker or a receiver stopped and started again) is never taken meanwhile by an outgoing connection's local
# port. Each pytest-xdist worker (gw0, gw1, ...) has a block of its own: workers never hand out the same one.
PORT_BLOCK_START, PORT_BLOCK_SIZE, PORT_BLOCKS = 20000, 1500, 8
_next_port_offset = secrets.randbelow(PORT_BLOCK_SIZE)
# A block belongs to the first process of its worker that loaded this module. Its children (a runner a test
# starts) inherit the worker's name but not its counter, and would hand out again a port the parent already
# gave away and nobody has bound yet (the runner's admin listener took the port its broker was told to use).
PORT_OWNER_ENV = "SENTRYCAM_PORT_OWNER"  # "<worker>:<pid>"
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_owner = os.environ.get(PORT_OWNER_ENV)
if _owner is None or _owner.partition(":")[0] != _WORKER:
    os.environ[PORT_OWNER_ENV] = f"{_WORKER}:{os.getpid()}"


def free_port() -> int:
    """A loopback port nothing listens on now, from this process's block (a child of the block's owner: one
    the kernel picks); each call a different one."""
    global _next_port_offset  # noqa: PLW0603  # one counter per process is the point
    worker = _WORKER.removeprefix("gw")
    block = int(worker) if worker.isdigit() else 0
    if block >= PORT_BLOCKS or os.environ.get(PORT_OWNER_ENV) != f"{_WORKER}:{os.getpid()}":
        return _any_free_port()
    start = PORT_BLOCK_START + block * PORT_BLOCK_SIZE
    for _ in range(PORT_BLOCK_SIZE):
        port = start + _next_port_offset
        _next_port_offset = (_next_port_offset + 1) % PORT_BLOCK_SIZE
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or still held by a closing connection
            return port
    return _any_free_port()


def _any_free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def derive_tls_config(source: str, certs_dir: Path, port: int) -> str:
    """``mosquitto/tls.conf`` with its certificates taken from ``certs_dir`` and its listener on ``port``."""
    lines = []
    for line in source.splitlines():
        words = line.split()
        if words[:1] == ["listener"]:
            lines.append(f"listener {port} 127.0.0.1")
        elif words[:1] and words[0] in {"certfile", "keyfile", "cafile"}:
            lines.append(f"{words[0]} {certs_dir / Path(words[1]).name}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def derive_config(source: str, workdir: Path, port: int, admin_port: int, extra: str = "") -> str:
    """The production config with its container paths pointed at ``workdir``, its listener on ``port``, and
    the admin listener on ``admin_port``."""
    replacements = {
        "password_file": f"password_file {workdir / 'passwd'}",
        "acl_file": f"acl_file {workdir / 'acl'}",
        "persistence_location": f"persistence_location {workdir / 'data'}/",
        "log_dest": f"log_dest file {workdir / 'mosquitto.log'}",
        "listener 1883": f"listener {port} 127.0.0.1",
        "include_dir": f"include_dir {workdir / 'conf.d'}",
    }
    lines = []
    for line in source.splitlines():
        words = line.split()
        key = " ".join(words[:2]) if words[:1] == ["listener"] else (words[0] if words else "")
        lines.append(replacements.get(key, line))
    # Run as whoever started it: as root, mosquitto would switch to a "mosquitto" user that cannot write here.
    lines.append(f"user {getpass.getuser()}")
    # Local only: many admin connections at once, each with its own client id (no use_username_as_clientid).
    lines.append(f"listener {admin_port} 127.0.0.1")
    return "\n".join(lines) + "\n" + extra


class LocalBroker:
    """One mosquitto process with the project's config; start, stop, restart and add users while it runs."""

    def __init__(self, workdir: Path, port: int | None = None, extra_config: str = "") -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.admin_port = free_port()
        self.host = "127.0.0.1"
        self.passwords: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self.tls_port: int | None = None
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        (workdir / "conf.d").mkdir(exist_ok=True)
        config = derive_config(
            (CONFIG_DIR / "mosquitto.conf").read_text(), workdir, self.port, self.admin_port, extra_config
        )
        self.config_file = workdir / "mosquitto.conf"
        self.config_file.write_text(config)
        acl = (CONFIG_DIR / "acl").read_text()
        (workdir / "acl").write_text(f"{acl}\nuser {ADMIN_USER}\ntopic readwrite #\n")
        for user in (*SERVICE_USERS, ADMIN_USER):
            self.add_user(user)

    @property
    def log_file(self) -> Path:
        return self.workdir / "mosquitto.log"

    def add_user(self, user: str) -> str:
        password = secrets.token_urlsafe(12)
        set_password(self.workdir / "passwd", user, password)
        self.passwords[user] = password
        self.reload()
        return password

    def add_camera(self, camera_id: str) -> str:
        """A camera user with its ACL block, as ``scripts/mqtt_users.py camera`` makes in production."""
        set_camera_acl(self.workdir / "acl", camera_id)
        return self.add_user(camera_user(camera_id))

    def add_detector(self, name: str) -> str:
        """A further detector instance's user ``detector-<name>`` with its ACL block, as
        ``scripts/mqtt_users.py detector <name>`` makes in production."""
        set_detector_acl(self.workdir / "acl", name)
        return self.add_user(detector_user(name))

    def login_like(self, service: str, login: str) -> str:
        """A further login ``login`` with the ACL rules of the ``service`` user and that service's status
        topic; made once, returned as is after. For tests that run two clients of one service at once, or
        clients that must not share one persistent session: one login has one connection and one session."""
        if login not in self.passwords:
            acl = self.workdir / "acl"
            rules = user_rules(acl.read_text().splitlines(), service)
            block = [f"user {login}", *rules, f"topic readwrite sentrycam/{service}/status"]
            acl.write_text(acl.read_text() + "\n".join(["", *block]) + "\n")
            self.add_user(login)
        return login

    def port_for(self, user: str) -> int:
        """The admin's own listener for the admin, the production listener for everyone else."""
        return self.admin_port if user == ADMIN_USER else self.port

    def enable_tls(self, certs_dir: Path) -> int:
        """Add the production TLS listener (``mosquitto/tls.conf``) with the certificates in ``certs_dir``
        (ca.crt, server.crt, server.key); takes effect at the next start. Returns its port."""
        self.tls_port = free_port()
        tls_config = derive_tls_config(TLS_CONF.read_text(), certs_dir, self.tls_port)
        (self.workdir / "conf.d" / "tls.conf").write_text(tls_config)
        return self.tls_port

    def env(self, user: str) -> dict[str, str]:
        """The MQTT_* settings a service logged in as ``user`` needs."""
        return {
            "MQTT_HOST": self.host,
            "MQTT_PORT": str(self.port_for(user)),
            "MQTT_USERNAME": user,
            "MQTT_PASSWORD": self.passwords[user],
        }

    def camera_env(self, camera_id: str) -> dict[str, str]:
        user = camera_user(camera_id)
        if user not in self.passwords:
            self.add_camera(camera_id)
        return self.env(user)

    def detector_env(self, name: str) -> dict[str, str]:
        """The login of detector instance ``name`` (``detector-<name>``), made on first use."""
        user = detector_user(name)
        if user not in self.passwords:
            self.add_detector(name)
        return self.env(user)

    def start(self, timeout_s: float = 10.0) -> None:
        self._process = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            # Out of the terminal's process group: Ctrl-C on scripts/run must reach the runner only, which
            # stops the services first (so they can still say offline) and the broker last.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._process.returncode}; see {self.log_file}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"mosquitto did not listen on {self.port} within {timeout_s} s")

    def reload(self) -> None:
        """Mosquitto rereads the password and ACL files on SIGHUP."""
        if self.running:
            assert self._process is not None
            self._process.send_signal(signal.SIGHUP)
            time.sleep(0.2)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is read, like a hung broker or a
        saturated link. ``resume()`` thaws it."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()
