"""`kmflow upload`, `ls`, `download` and `audit`: arguments, and failures as exit codes.

Every expected failure is a ClientError, printed here as one `kmflow: ...` line and returned
as its exit code (see errors.py); nothing below prints a traceback for it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from app.client.errors import EXIT_CODES_HELP, ClientError, ExitCode, LocalProblem

if TYPE_CHECKING:  # httpx is imported only when a client command runs, not for `serve`
    from app.client.api import ApiClient

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "KMFLOW_URL"
KEY_ENV = "KMFLOW_API_KEY"
DEFAULT_RETRIES = 4
HELP_WIDTH = 88


def add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server = _server_options()
    upload = _add(
        commands,
        "upload",
        server,
        "upload files to an engagement",
        "Upload each FILE (streamed, SHA-256 checked by the server and again against "
        "the stored record). Prints `<id>  <file>` per stored file.",
    )
    upload.add_argument("files", nargs="+", type=Path, metavar="FILE")
    upload.add_argument("-e", "--engagement", required=True, help="engagement id")
    upload.add_argument("--metadata", metavar="JSON", help="a JSON object stored with each file")
    upload.add_argument("--json", action="store_true", help="print each record as JSON Lines")
    upload.set_defaults(handler=run_upload)

    ls = _add(
        commands,
        "ls",
        server,
        "list an engagement's evidence",
        "List every record of ENGAGEMENT, newest first: id, stored_at, size, name.",
    )
    ls.add_argument("engagement_id", metavar="ENGAGEMENT")
    ls.add_argument("--content-hash", metavar="SHA256", help="only records with this hash")
    ls.add_argument("--json", action="store_true", help="print records as JSON Lines")
    ls.set_defaults(handler=run_ls)

    fetch = _add(
        commands,
        "download",
        server,
        "download one evidence file, verified",
        "Download evidence ID of ENGAGEMENT into PATH (default: the stored file name, "
        "without any directory, in the current directory). The bytes go to PATH.part "
        "and are renamed into place only once their SHA-256 matches the record; an "
        "interrupted download resumes from PATH.part. Prints the path written.",
    )
    fetch.add_argument("engagement_id", metavar="ENGAGEMENT")
    fetch.add_argument("evidence_id", metavar="ID")
    fetch.add_argument("-o", "--output", type=Path, metavar="PATH", help="file or directory")
    fetch.add_argument("--force", action="store_true", help="replace an existing file")
    fetch.set_defaults(handler=run_download)

    audit = _add(
        commands,
        "audit",
        server,
        "an engagement's audit trail",
        "Print every audit event of ENGAGEMENT, oldest first: when, principal, action, record, "
        "outcome and detail (uploads, content reads, withdrawals, holds, purges). Needs a key "
        "with the audit role.",
    )
    audit.add_argument("engagement_id", metavar="ENGAGEMENT")
    audit.add_argument("--json", action="store_true", help="print events as JSON Lines")
    audit.set_defaults(handler=run_audit)


def _add(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    parent: argparse.ArgumentParser,
    summary: str,
    text: str,
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        parents=[parent],
        help=summary,
        description=textwrap.fill(text, HELP_WIDTH),  # the epilog's layout is kept as is
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _server_options() -> argparse.ArgumentParser:
    """Options every client command shares. Defaults come from the environment when the
    command runs (never shown in --help: the key must not be printed)."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("server")
    group.add_argument("--url", help=f"server URL (default: {URL_ENV}, else {DEFAULT_URL})")
    group.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"bearer key (default: {KEY_ENV}; prefer the variable: other users can see "
        "command lines)",
    )
    group.add_argument(
        "--retries",
        type=_non_negative,
        default=DEFAULT_RETRIES,
        metavar="N",
        help="retries after a connection error, timeout or 502/503/504, with backoff "
        f"(default: {DEFAULT_RETRIES})",
    )
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes")
    return options


def run_upload(args: argparse.Namespace) -> int:
    from app.client.upload import upload_all

    def upload(api: ApiClient) -> int:
        metadata = _metadata(args.metadata)
        return upload_all(
            api, args.files, args.engagement, metadata, quiet=args.quiet, as_json=args.json
        )

    return _with_client(args, upload)


def run_ls(args: argparse.Namespace) -> int:
    from app.client.listing import print_json_lines, print_table, records

    def ls(api: ApiClient) -> int:
        items = records(api, args.engagement_id, args.content_hash)
        show = print_json_lines if args.json else print_table
        if show(items, sys.stdout) == 0 and not args.quiet:
            which = " with that content hash" if args.content_hash else ""
            print(f"kmflow: no evidence in {args.engagement_id}{which}", file=sys.stderr)
        return ExitCode.OK

    return _with_client(args, ls)


def run_download(args: argparse.Namespace) -> int:
    from app.client.download import download

    def fetch(api: ApiClient) -> int:
        path = download(
            api,
            args.engagement_id,
            args.evidence_id,
            args.output,
            force=args.force,
            quiet=args.quiet,
        )
        print(path)
        return ExitCode.OK

    return _with_client(args, fetch)


def run_audit(args: argparse.Namespace) -> int:
    from app.client.audit import events, print_json_lines, print_table

    def audit(api: ApiClient) -> int:
        show = print_json_lines if args.json else print_table
        if show(events(api, args.engagement_id), sys.stdout) == 0 and not args.quiet:
            print(f"kmflow: no audit events for {args.engagement_id}", file=sys.stderr)
        return ExitCode.OK

    return _with_client(args, audit)


def _with_client(args: argparse.Namespace, action: Callable[[ApiClient], int]) -> int:
    """Run `action` with a client built from the arguments and the environment."""
    try:
        with connect(args) as api:
            return int(action(api))
    except ClientError as error:
        print(f"kmflow: {error}", file=sys.stderr)
        return int(error.exit_code)
    except KeyboardInterrupt:
        print("kmflow: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


def connect(args: argparse.Namespace) -> ApiClient:
    from app.client.api import ApiClient
    from app.client.retry import RetryPolicy

    def note(message: str) -> None:
        if not args.quiet:
            print(f"kmflow: {message}", file=sys.stderr)

    return ApiClient(
        args.url or os.environ.get(URL_ENV) or DEFAULT_URL,
        args.api_key or os.environ.get(KEY_ENV) or None,
        retry=RetryPolicy(attempts=args.retries + 1),
        notify=note,
    )


def _metadata(text: str | None) -> str | None:
    """--metadata checked here, so a typo fails before any file is sent."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise LocalProblem(f"--metadata is not valid JSON: {error.msg}") from None
    if not isinstance(value, dict):
        raise LocalProblem("--metadata must be a JSON object")
    return text


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value
