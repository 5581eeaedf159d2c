"""The client's exit codes and the errors that carry them.

Each failure a person can meet maps to one code, so scripts can tell "fix the command" from
"try again later" from "the bytes are wrong" without reading messages.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    REFUSED = 1  # the server refused or failed a request (4xx but auth, 500); local I/O failed
    USAGE = 2  # bad arguments or a local problem found before anything was transferred
    DIGEST_MISMATCH = 3  # bytes differ from their SHA-256: upload refused, download discarded
    UNAVAILABLE = 4  # no answer, or 502/503/504, after every retry: worth trying again later
    AUTH = 5  # no API key where the server wants one, or the key was refused (401/403)
    INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


EXIT_CODES_HELP = """\
exit codes:
  0  everything succeeded
  1  the server refused or failed a request (e.g. not found, too large, invalid input),
     or a local file could not be read or written during a transfer
  2  usage error, or a local problem found before transferring (missing input file,
     output file exists without --force)
  3  digest mismatch: the server refused an upload whose bytes did not match their
     SHA-256, or downloaded bytes did not match the record (nothing is kept)
  4  the server could not be reached, or stayed unavailable (502/503/504), after retries
  5  authentication: no API key where the server requires one, the key was refused,
     or it lacks the role the command needs (403)
With several files, each failure is reported and the highest code is returned."""


class ClientError(Exception):
    """An expected failure: printed as one line, never as a traceback."""

    exit_code = ExitCode.REFUSED


class ServerRefused(ClientError):
    exit_code = ExitCode.REFUSED


class LocalProblem(ClientError):
    exit_code = ExitCode.USAGE


class CorruptTransfer(ClientError):
    """Bytes that do not hash to their SHA-256 on the way (the server's `DigestMismatch`, or
    a download that differs from its record): nothing was kept."""

    exit_code = ExitCode.DIGEST_MISMATCH


class Unavailable(ClientError):
    exit_code = ExitCode.UNAVAILABLE


class AuthRefused(ClientError):
    exit_code = ExitCode.AUTH


class Transient(Exception):
    """One attempt failed in a way worth retrying; `final` is raised if none is left."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
