"""The storage contract's `restore`, on every backend in `tests.conftest.BACKENDS`."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from app.storage.base import StorageBackend
from app.storage.errors import EvidenceExists, InvalidInput
from app.storage.registry import create_backend
from tests.conftest import settings_from_env


@pytest.fixture
def backend(backend_env: dict[str, str]) -> Iterator[StorageBackend]:
    backend = create_backend(settings_from_env(backend_env))
    yield backend
    backend.close()


def test_restoring_an_id_the_backend_holds_refuses_and_keeps_the_stored_evidence(
    backend: StorageBackend,
) -> None:
    record = backend.write("E1", "minutes.pdf", io.BytesIO(b"the original"), {"v": 1})
    other_bytes = record.model_copy(update={"content_hash": "0" * 64, "size_bytes": 5})

    with pytest.raises(EvidenceExists):
        backend.restore(record, io.BytesIO(b"the original"))
    with pytest.raises(InvalidInput, match="do not match"):
        backend.restore(other_bytes, io.BytesIO(b"other"))

    assert backend.list("E1").items == [record]
    with backend.open(record) as stream:
        assert stream.read() == b"the original"


def test_restore_refuses_a_record_kmflow_could_not_have_written(backend: StorageBackend) -> None:
    record = backend.write("E1", "a.txt", io.BytesIO(b"x"))
    for change in (
        {"id": "f" * 31, "stored_at": record.stored_at},
        {"id": "e" * 32, "stored_at": "2024-01-01 10:00:00+00:00"},
        {"id": "d" * 32, "metadata_json": "[1, 2]"},
    ):
        with pytest.raises(InvalidInput):
            backend.restore(record.model_copy(update=change), io.BytesIO(b"x"))
    assert backend.list("E1").items == [record]
