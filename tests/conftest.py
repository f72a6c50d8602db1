"""Fixtures: a real Mosquitto with the project's config, collectors on it, and services as processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, sync_playwright

from scripts.localbroker import LocalBroker
from services.web.relay import WebRelay
from tests.support import SHARED_DIR, Collector, ServiceProcess
from tests.web_support import CHROMIUM, CHROMIUM_ARGS, running_relay


def pytest_configure(config: pytest.Config) -> None:
    if not (SHARED_DIR / "media").is_dir():
        raise pytest.UsageError(f"shared media not found at {SHARED_DIR}; set SHARED_DIR")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """One broker for the session; tests keep apart by using their own camera ids."""
    local = LocalBroker(tmp_path_factory.mktemp("broker"))
    local.start()
    yield local
    local.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of the test's own, for tests that stop, restart or reconfigure it."""
    local = LocalBroker(tmp_path / "broker")
    local.start()
    yield local
    local.stop()


@pytest.fixture
def collector(broker: LocalBroker) -> Iterator[Callable[..., Collector]]:
    made: list[Collector] = []

    def make(*filters: str, on: LocalBroker | None = None) -> Collector:
        made.append(Collector(on or broker, *filters))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start ``python -m services.<name>`` with the given settings; stopped (or killed) after the test."""
    started: list[ServiceProcess] = []

    def start(name: str, env: dict[str, str], unprivileged: bool = False) -> ServiceProcess:
        started.append(ServiceProcess(name, env, tmp_path, unprivileged=unprivileged).start())
        return started[-1]

    yield start
    for each in started:
        if each.process is not None and each.process.poll() is None:
            each.kill()


@pytest.fixture
def publisher(broker: LocalBroker) -> Iterator[Collector]:
    """An admin client for a test to publish with, on the session's broker."""
    made = Collector(broker)
    yield made
    made.close()


@pytest.fixture
def web(broker: LocalBroker, tmp_path: Path) -> Iterator[tuple[WebRelay, Flask]]:
    """The web relay in process (Flask's test client on ``app``), on the session's broker."""
    with running_relay(broker, tmp_path / "web") as relay_and_app:
        yield relay_and_app


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, through Playwright."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
