"""scripts/run with the web relay: a generated password, printed once, that logs in."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.parse
import urllib.request

from scripts.localbroker import free_port
from tests.test_runner import runners  # noqa: F401 (the fixture)


def test_runner_starts_the_relay_with_a_generated_password(runners) -> None:  # noqa: F811
    port = free_port()
    runner = runners(SENTRYCAM_SERVICES="web", WEB_PORT=str(port), WEB_HOST="127.0.0.1")
    runner.wait_for_output("(set WEB_PASSWORD to choose one)")
    password = re.search(r"log in as admin with password (\S+) ", runner.output).group(1)  # type: ignore[union-attr]
    runner.wait_for_output("serving on")
    assert runner.output.count(password) == 1  # printed once, never logged by the relay
    assert (runner.run_dir / "web" / "secret_key").is_file()
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://127.0.0.1:{port}"
    html = opener.open(f"{base}/login").read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    form = {"username": "admin", "password": password, "csrf_token": token}
    opener.open(f"{base}/login", data=urllib.parse.urlencode(form).encode())
    with opener.open(f"{base}/api/status") as response:
        assert response.status == 200
    assert runner.ctrl_c() == 0
