"""The Docker HEALTHCHECK of the MQTT services: healthy while the container holds a live connection to the
broker.

    python -m services.common.healthcheck            # exit 0 when connected, 1 otherwise
    python -m services.common.healthcheck --web      # and the web relay answers /healthz on WEB_PORT

A service that lost the broker says ``offline`` through its Last Will and reconnects by itself; while it
cannot, the container is reported unhealthy, which is what ``docker ps`` and ``depends_on`` should show. It
reads the kernel's socket table (``/proc/net/tcp``, ``/proc/net/tcp6``) of the container's network namespace,
so it needs no broker login, no ACL entry and no cooperation from the service.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from services.common.settings import ServiceSettings, describe_error

TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
ESTABLISHED = "01"
HTTP_TIMEOUT_S = 4.0


def established_remote_ports(tables: Iterable[Path] = TCP_TABLES) -> set[int]:
    """Remote ports of the established TCP connections in this network namespace."""
    ports: set[int] = set()
    for table in tables:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue  # no IPv6 in this namespace
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and fields[3] == ESTABLISHED:
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def web_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=HTTP_TIMEOUT_S) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--web", action="store_true", help="also ask the web relay's /healthz")
    args = parser.parse_args(argv)
    try:
        settings = ServiceSettings()
    except ValidationError as error:
        print(f"unhealthy: {describe_error(error)}", file=sys.stderr)
        return 1
    if settings.mqtt_port not in established_remote_ports():
        print(f"unhealthy: no connection to the broker on port {settings.mqtt_port}", file=sys.stderr)
        return 1
    # The web relay's own setting; read plainly because services.common cannot import the web's settings.
    web_port = int(os.environ.get("WEB_PORT") or 8080) if args.web else 0
    if args.web and not web_answers(web_port):
        print(f"unhealthy: no answer on http://127.0.0.1:{web_port}/healthz", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
