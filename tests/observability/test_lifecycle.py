"""Stopping: an upload in flight when SIGTERM arrives finishes within the grace period, and
is not acknowledged (nor stored) when the grace period is shorter than it."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, AUTH
from tests.live_server import LiveServer
from tests.multipart import multipart_envelope


@pytest.mark.slow
@pytest.mark.parametrize("grace", [20, 0])
def test_sigterm_lets_an_upload_in_flight_finish_within_the_grace(
    tmp_path: Path, grace: int
) -> None:
    env = {
        "STORAGE_BACKEND": "local",
        "LOCAL_STORAGE_PATH": str(tmp_path / "evidence_store"),
        "STATE_PATH": str(tmp_path / "kmflow_state"),
        "API_KEYS": API_KEY,
        "SHUTDOWN_GRACE_SECONDS": str(grace),
    }
    server = LiveServer(env, cwd=tmp_path)
    head, tail = multipart_envelope({"engagement_id": "ENG-T"}, "slow.bin", "b0undary")
    halfway = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield head
        for n in range(20):
            if n == 5:
                halfway.set()
            time.sleep(0.1)
            yield b"x" * 10_000
        yield tail

    answers: list[httpx.Response] = []

    def send() -> None:
        # A transport error: cut off with no answer at all.
        with (
            httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http,
            contextlib.suppress(httpx.TransportError),
        ):
            answers.append(
                http.post(
                    "/api/v1/evidence/upload",
                    content=slow_body(),
                    headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
                )
            )

    sender = threading.Thread(target=send)
    sender.start()
    assert halfway.wait(30)
    server.process.send_signal(signal.SIGTERM)
    sender.join(60)
    exit_code = server.process.wait(30)
    server.stop()

    assert exit_code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    engagement = tmp_path / "evidence_store" / "ENG-T"
    stored = [path.stat().st_size for path in engagement.iterdir()] if engagement.exists() else []
    if grace:
        assert [answer.status_code for answer in answers] == [201], [a.text for a in answers]
        assert stored == [200_000]
    else:
        assert [answer.status_code for answer in answers if answer.status_code < 300] == []
        assert stored == []
