"""SIGKILL under upload load, then a restart: a 201 is a promise that the evidence is stored.

Uploader threads send files of random sizes (one byte to 3 MiB) to a real `kmflow serve` and
record every 201 with the SHA-256 of what they sent; one more upload stalls mid-body, so every
kill interrupts at least one write. At a random moment (seeded: the seed is printed, and
KMFLOW_CRASH_SEED=<seed> replays the same kill moments) the server gets SIGKILL and is started
again on the same directories. After every restart:

- every acknowledged upload is listed, with its hash and size, and its bytes hash to it, both
  on disk and through the API;
- the store holds exactly the files of the listed records: no record points at a missing file,
  no file is without its record (an upload in flight at the kill may have landed whole, with
  its record, or not at all);
- the killed process's partial uploads and write intents are gone.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, AUTH
from tests.live_server import LiveServer
from tests.multipart import multipart_envelope
from tests.reliability.observe import (
    all_records,
    sha256_of,
    staging_leftovers,
    staging_owners,
    store_files,
)
from tests.reliability.raw_http import UPLOAD, connect, request_head

pytestmark = pytest.mark.slow

KILLS = 5
UPLOADERS = 6
ENGAGEMENTS = ("CRASH-A", "CRASH-B", "CRASH-C")
SIZES = (1, 700, 64 * 1024, 1024 * 1024, 3 * 1024 * 1024)
MIB = 1024 * 1024


@dataclass(frozen=True)
class Acknowledged:
    id: str
    engagement_id: str
    sha256: str
    size: int


class Uploader(threading.Thread):
    """Uploads until the server goes away; every 201 is recorded with what was sent."""

    def __init__(self, url: str, seed: int, acknowledged: list[Acknowledged]) -> None:
        super().__init__(daemon=True)
        self.url, self.seed, self.acknowledged = url, seed, acknowledged
        self.refused: list[str] = []

    def run(self) -> None:
        rng = random.Random(self.seed)  # noqa: S311 - reproducible, not secret
        with httpx.Client(base_url=self.url, headers=AUTH, timeout=60) as http:
            while True:
                content = rng.randbytes(rng.choice(SIZES))
                engagement_id = rng.choice(ENGAGEMENTS)
                try:
                    response = http.post(
                        UPLOAD,
                        data={"engagement_id": engagement_id},
                        files={"file": (f"{len(content)}.bin", content)},
                    )
                except httpx.HTTPError:
                    return  # killed: this upload's outcome is unknown to the client
                if response.status_code != 201:
                    self.refused.append(f"{response.status_code} {response.text}")
                    continue
                record = response.json()
                digest = hashlib.sha256(content).hexdigest()
                self.acknowledged.append(
                    Acknowledged(record["id"], engagement_id, digest, len(content))
                )


def wait_for_staged_upload(env: dict[str, str]) -> str:
    deadline = time.monotonic() + 30
    while not (staged := [p for p in staging_leftovers(env) if p.endswith(".part")]):
        assert time.monotonic() < deadline, "the stalled upload was never staged"
        time.sleep(0.02)
    return staged[0]


def check_store(server: LiveServer, env: dict[str, str], acknowledged: list[Acknowledged],
                fresh: list[Acknowledged]) -> int:  # fmt: skip
    """The promises in the module docstring; returns how many records nobody was told of."""
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
        records = {r["id"]: r for e in ENGAGEMENTS for r in all_records(http, e)}
        lost = [ack for ack in acknowledged if ack.id not in records]
        assert lost == [], f"{len(lost)} acknowledged uploads are not listed: {lost[:3]}"
        for ack in acknowledged:
            record = records[ack.id]
            listed = (record["engagement_id"], record["content_hash"], record["size_bytes"])
            assert listed == (ack.engagement_id, ack.sha256, ack.size), record
        files = store_files(env)
        assert sorted(files) == sorted(r["volume_path"] for r in records.values())
        for record in records.values():
            assert sha256_of(files[record["volume_path"]]) == record["content_hash"], record
        for ack in fresh:  # the bytes of this round's uploads, through the API too
            url = f"/api/v1/evidence/{ack.engagement_id}/{ack.id}/content"
            digest = hashlib.sha256(http.get(url).content).hexdigest()
            assert digest == ack.sha256, ack
    assert staging_leftovers(env) == []
    assert len(staging_owners(env)) == 1  # the live server's own; the killed one's are gone
    return len(records) - len(acknowledged)


@pytest.mark.parametrize("backend_name", ["local", "delta"])
def test_sigkill_under_upload_load_loses_no_acknowledged_upload(
    backend_env: dict[str, str], tmp_path: Path
) -> None:
    seed = int(os.environ.get("KMFLOW_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"crash test seed: {seed} (KMFLOW_CRASH_SEED={seed} replays it)")
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    env = {**backend_env, "API_KEYS": API_KEY}
    acknowledged: list[Acknowledged] = []
    refused: list[str] = []
    leftovers_at_kill: list[int] = []
    unacknowledged_landed = 0
    server = LiveServer(env, cwd=tmp_path)
    try:
        for _ in range(KILLS):
            before = len(acknowledged)
            # A stalled upload first, alone, so its staged file is known to be in flight.
            head, _ = multipart_envelope({"engagement_id": ENGAGEMENTS[0]}, "stalled.bin", "st")
            stalled = connect(server.port)
            stalled.sendall(
                request_head("POST", UPLOAD, {
                    "Content-Type": "multipart/form-data; boundary=st",
                    "Content-Length": str(len(head) + 8 * MIB + 8),
                }) + head + b"s" * (2 * MIB)
            )  # fmt: skip
            stalled_part = wait_for_staged_upload(env)
            uploaders = [
                Uploader(server.url, rng.randrange(2**32), acknowledged) for _ in range(UPLOADERS)
            ]
            for uploader in uploaders:
                uploader.start()
            time.sleep(rng.uniform(0.2, 2.5))  # the random moment of the kill
            server.process.kill()
            server.process.wait()
            for uploader in uploaders:
                uploader.join(timeout=60)
                refused += uploader.refused
            stalled.close()
            left = staging_leftovers(env)
            assert stalled_part in left
            leftovers_at_kill.append(len(left))
            server.stop()

            server = LiveServer(env, cwd=tmp_path)
            unacknowledged_landed = check_store(server, env, acknowledged, acknowledged[before:])
    finally:
        server.stop()

    assert refused == []
    assert len(acknowledged) > KILLS * UPLOADERS  # the load was real
    print(
        f"{backend_env['STORAGE_BACKEND']}: {KILLS} kills survived, {len(acknowledged)} "
        f"acknowledged uploads all found, lost: 0; leftovers removed at restart: "
        f"{leftovers_at_kill}; in-flight uploads that landed whole: {unacknowledged_landed}"
    )
