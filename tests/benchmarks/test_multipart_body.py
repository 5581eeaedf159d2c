"""The pre-built form body must be one that a multipart parser reads back exactly."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from python_multipart.multipart import MultipartParser, parse_options_header

from benchmarks.multipart_body import UNIQUE_MARK, multipart_form, unique_content


class _Parts:
    """python-multipart callbacks that collect (Content-Disposition, data) of each part."""

    def __init__(self) -> None:
        self.parts: list[tuple[bytes, bytes]] = []
        self.headers: dict[bytes, bytes] = {}
        self.field = b""
        self.value = b""
        self.data = b""

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._add("field", d[s:e]),
            "on_header_value": lambda d, s, e: self._add("value", d[s:e]),
            "on_header_end": self._header_end,
            "on_part_data": lambda d, s, e: self._add("data", d[s:e]),
            "on_part_end": lambda: self.parts.append(
                (self.headers[b"content-disposition"], self.data)
            ),
        }

    def _begin(self) -> None:
        self.headers, self.data = {}, b""

    def _add(self, name: str, data: bytes) -> None:
        setattr(self, name, getattr(self, name) + data)

    def _header_end(self) -> None:
        self.headers[self.field.lower()] = self.value
        self.field, self.value = b"", b""


def parse(body: bytes, content_type: str) -> list[tuple[bytes, bytes]]:
    _, params = parse_options_header(content_type)
    collector = _Parts()
    parser = MultipartParser(params[b"boundary"], collector.callbacks())  # type: ignore[arg-type]
    parser.write(body)
    parser.finalize()
    return collector.parts


def test_fields_then_file_round_trip() -> None:
    content = bytes(range(256)) * 64  # every byte value, 16 KiB
    body, content_type = multipart_form({"engagement_id": "small-bench"}, "evidence.bin", content)
    assert content_type.startswith("multipart/form-data; boundary=")
    assert parse(body, content_type) == [
        (b'form-data; name="engagement_id"', b"small-bench"),
        (b'form-data; name="file"; filename="evidence.bin"', content),
    ]


def test_boundary_can_be_fixed() -> None:
    body, content_type = multipart_form({}, "a.bin", b"x", boundary="B0UND")
    assert content_type == "multipart/form-data; boundary=B0UND"
    assert body.startswith(b"--B0UND\r\n") and body.endswith(b"\r\n--B0UND--\r\n")


def test_unique_content_starts_with_the_mark_wrk_replaces() -> None:
    content = unique_content(16 * 1024)
    assert len(content) == 16 * 1024 and content.startswith(UNIQUE_MARK)
    assert len(UNIQUE_MARK) == 32  # bounded.lua writes 32 digits in its place
    with pytest.raises(ValueError):
        unique_content(8)
