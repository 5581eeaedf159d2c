"""A pytest plugin: the whole test run's logs must never contain an API key, a token, a
client secret or the link signing secret.

Every log record made in the test process (INFO and up, any logger) is checked as it is
emitted, and at the end every server log the run's real server processes wrote (the
`server-*.log` files LiveServer keeps under the run's temporary directory) is read. A secret
anywhere fails the run, naming where it was seen.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.datalake.workspace import MINILAKE_CLIENT_SECRET, MINILAKE_TOKEN
from tests.keys import API_KEY, AUDIT_KEY, LINK_SECRET

SECRETS = (API_KEY, AUDIT_KEY, LINK_SECRET, MINILAKE_TOKEN, MINILAKE_CLIENT_SECRET)


class SecretSpotter(logging.Handler):
    """Remembers where a secret was logged; keeps no log text."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.sightings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):  # a badly formatted record is not ours to fail on
            return
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        if any(secret in text for secret in SECRETS):
            self.sightings.append(f"log record of {record.name} ({record.levelname})")


def server_log_sightings(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("server-*.log")):
        text = path.read_text(errors="replace")
        found += [f"{path}" for secret in SECRETS if secret in text]
    return found


_spotter = SecretSpotter()


def pytest_configure(config: pytest.Config) -> None:
    root = logging.getLogger()
    root.addHandler(_spotter)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    basetemp = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    sightings = _spotter.sightings + server_log_sightings(Path(basetemp))
    if sightings:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "a secret appeared in the logs: " + "; ".join(sorted(set(sightings))[:20])
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
