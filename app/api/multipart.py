"""Stream a multipart upload body into a staged file, whatever the order of its parts.

Starlette's `request.form()` spools files to a temporary file first and then the backend would
copy them again; here the file part goes straight into the backend's staged file (hashed as it
is written) through `FileBody`, off the event loop. Memory per upload stays at about one
network chunk plus two write buffers, for any file size. Limits are enforced while reading, so
an oversized body is refused without being stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.api.errors import ApiError, invalid_request, malformed_request, payload_too_large
from app.api.file_body import FileBody
from app.api.threads import in_thread
from app.storage.staging import StagedFile

FILE_FIELD = "file"
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_HEADER_BYTES = 8 * 1024  # one part header's name or value
MAX_PART_HEADERS = 8  # Content-Disposition and Content-Type are all a part needs


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int
    max_field_bytes: int
    text_fields: frozenset[str]
    max_parts: int = 16

    @property
    def max_body_bytes(self) -> int:
        """The most a well-formed upload can take on the wire, declared or chunked."""
        fields = self.max_field_bytes * len(self.text_fields)
        return self.max_file_bytes + fields + MULTIPART_OVERHEAD_BYTES


@dataclass
class ReceivedUpload:
    """The form's text fields and its file part; the caller commits or discards `file`."""

    fields: dict[str, str] = field(default_factory=dict)
    file: FileBody | None = None
    file_name: str | None = None
    body_sha256: str | None = None  # of the whole body as sent, when `hash_body` asked


class _PartEvents:
    """python-multipart callbacks, recorded so the async loop can act on them in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.finished = False
        self._headers: dict[bytes, bytes] = {}
        self._name = bytearray()
        self._value = bytearray()

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: _bounded(self._name, data[start:end]),
            "on_header_value": lambda data, start, end: _bounded(self._value, data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self.events.append(("headers", self._headers)),
            "on_part_data": lambda data, start, end: self.events.append(("data", data[start:end])),
            "on_part_end": lambda: self.events.append(("end", None)),
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_end(self) -> None:
        self._headers[bytes(self._name).lower()] = bytes(self._value)
        self._name.clear()
        self._value.clear()

    def _end(self) -> None:
        self.finished = True


def _bounded(buffer: bytearray, data: bytes) -> None:
    """Part headers are bounded here too, whatever the python-multipart version enforces."""
    if len(buffer) + len(data) > MAX_HEADER_BYTES:
        raise malformed_request(f"a part header is longer than {MAX_HEADER_BYTES} bytes")
    buffer.extend(data)


def multipart_boundary(request: Request) -> bytes:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "send the upload as multipart/form-data")
    boundary = params.get(b"boundary")
    if not boundary:
        raise malformed_request("multipart/form-data without a boundary")
    return boundary


async def receive_upload(
    request: Request,
    stage: Callable[[], StagedFile],
    limits: UploadLimits,
    *,
    hash_body: bool = False,
) -> ReceivedUpload:
    """Read the whole body; on any error what was staged is discarded before raising.
    `hash_body`: also hash the body as sent (to check a client's `Content-Digest`)."""
    boundary = multipart_boundary(request)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise payload_too_large(f"upload is larger than the {limits.max_file_bytes}-byte limit")

    received = ReceivedUpload()
    try:
        await _read_parts(request, boundary, stage, limits, received, hash_body)
    except BaseException:
        if received.file is not None:
            received.file.abandon()
            await in_thread(received.file.discard)
        raise
    return received


async def _read_parts(
    request: Request,
    boundary: bytes,
    stage: Callable[[], StagedFile],
    limits: UploadLimits,
    received: ReceivedUpload,
    hash_body: bool,
) -> None:
    recorder = _PartEvents()
    body_hash = hashlib.sha256() if hash_body else None
    parts = 0
    body_bytes = 0
    current: str | None = None  # name of the part being read
    field_value = bytearray()
    try:
        parser = MultipartParser(  # python-multipart's own limits too, stated rather than assumed
            boundary,
            recorder.callbacks(),  # type: ignore[arg-type]
            max_size=limits.max_body_bytes,
            max_header_count=MAX_PART_HEADERS,
            max_header_size=MAX_HEADER_BYTES,
        )
        async for chunk in request.stream():
            body_bytes += len(chunk)
            if body_bytes > limits.max_body_bytes:
                raise payload_too_large(
                    f"upload is larger than the {limits.max_file_bytes}-byte limit"
                )
            if body_hash is not None:
                body_hash.update(chunk)
            if recorder.finished:
                continue  # bytes after the closing boundary: counted, not parsed
            parser.write(chunk)
            for kind, value in recorder.events:
                if kind == "headers":
                    parts += 1
                    if parts > limits.max_parts:
                        raise payload_too_large(f"more than {limits.max_parts} form parts")
                    current, file_name = _describe_part(value)  # type: ignore[arg-type]
                    if current == FILE_FIELD:
                        if received.file is not None:
                            raise invalid_request("send exactly one 'file' part")
                        received.file_name = file_name
                        received.file = FileBody(stage)
                    elif current in received.fields or current not in limits.text_fields:
                        allowed = ", ".join(sorted(limits.text_fields | {FILE_FIELD}))
                        raise invalid_request(
                            f"unexpected or repeated form field {current!r}; allowed: {allowed}"
                        )
                    field_value.clear()
                elif kind == "data" and current == FILE_FIELD:
                    assert received.file is not None
                    data: bytes = value  # type: ignore[assignment]
                    if received.file.size + len(data) > limits.max_file_bytes:
                        raise payload_too_large(
                            f"file is larger than the {limits.max_file_bytes}-byte limit"
                        )
                    await received.file.receive(data)
                elif kind == "data":
                    field_value.extend(value)  # type: ignore[arg-type]
                    if len(field_value) > limits.max_field_bytes:
                        raise payload_too_large(
                            f"form field {current!r} is larger than {limits.max_field_bytes} bytes"
                        )
                elif kind == "end" and current == FILE_FIELD:
                    assert received.file is not None
                    await received.file.settle()
                elif kind == "end" and current is not None:
                    received.fields[current] = _decode_text(current, field_value)
            recorder.events.clear()
        parser.finalize()
    except (MultipartParseError, FormParserError) as error:
        raise malformed_request(f"malformed multipart body: {error}") from None
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client closed the connection") from None
    if not recorder.finished:
        raise malformed_request("multipart body ended before its closing boundary")
    if body_hash is not None:
        received.body_sha256 = body_hash.hexdigest()


def _describe_part(headers: dict[bytes, bytes]) -> tuple[str, str | None]:
    """(form field name, file name or None) from a part's Content-Disposition."""
    disposition, params = parse_options_header(headers.get(b"content-disposition", b""))
    if disposition != b"form-data" or b"name" not in params:
        raise malformed_request("every part needs 'Content-Disposition: form-data; name=...'")
    name = params[b"name"].decode("utf-8", "replace")
    if b"filename" not in params:
        if name == FILE_FIELD:
            raise invalid_request(f"the '{FILE_FIELD}' part must be a file (with a filename)")
        return name, None
    if name != FILE_FIELD:
        raise invalid_request(f"files go in the '{FILE_FIELD}' field, not {name!r}")
    try:
        return name, params[b"filename"].decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_request("the file name is not UTF-8") from None


def _decode_text(name: str, value: bytearray) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_request(f"form field {name!r} is not UTF-8 text") from None
