"""The run-wide secret check (tests/log_secrets.py) really catches a leak."""

from __future__ import annotations

import logging
from pathlib import Path

from tests.datalake.workspace import MINILAKE_TOKEN
from tests.keys import API_KEY
from tests.log_secrets import SecretSpotter, server_log_sightings


def test_the_spotter_flags_a_record_or_exception_holding_a_secret() -> None:
    spotter = SecretSpotter()
    logger = logging.getLogger("tests.leaky")
    logger.addHandler(spotter)
    logger.propagate = False  # these leaks are on purpose: kept from the run-wide check
    try:
        logger.warning("harmless line")
        logger.warning("key was %s", API_KEY)
        try:
            raise RuntimeError(f"token {MINILAKE_TOKEN}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(spotter)
        logger.propagate = True
    assert spotter.sightings == [
        "log record of tests.leaky (WARNING)",
        "log record of tests.leaky (ERROR)",
    ]


def test_server_logs_are_read_for_secrets(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "server-1.log").write_text("all fine\n")
    leaky = tmp_path / "a" / "server-2.log"
    leaky.write_text(f"Authorization: Bearer {API_KEY}\n")
    try:
        assert server_log_sightings(tmp_path) == [str(leaky)]
    finally:
        leaky.unlink()  # a leak on purpose: kept from the run-wide check at the end
