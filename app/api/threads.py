"""Blocking work of a request (the storage backends are synchronous) on a request thread.

Starlette's `run_in_threadpool` (anyio's `to_thread.run_sync`) takes a capacity-limiter token,
opens a cancel scope and looks up its per-loop worker registry on every call; under 16 KiB
uploads that was a tenth of the event loop's time (py-spy, one worker), for one hand-off per
upload. asyncio's `run_in_executor` is a queue put one way and a `call_soon_threadsafe` back.

The request threads are the event loop's default executor, set up by the lifespan
(`request_threads`). A cancelled request stops waiting, and its thread finishes the work: an
upload's commit is never cut in half. The lifespan waits for every thread before it closes the
backend.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

# As many requests may wait on storage at once as anyio allowed by default.
DEFAULT_REQUEST_THREADS = 40

P = ParamSpec("P")
T = TypeVar("T")


def request_threads(wanted: int | None) -> ThreadPoolExecutor:
    """The pool for this process's requests: `wanted` threads (a backend whose calls wait on
    the network asks for more), never fewer than the default."""
    return ThreadPoolExecutor(
        max_workers=max(DEFAULT_REQUEST_THREADS, wanted or 0), thread_name_prefix="kmflow-request"
    )


def in_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
    """`function(*args, **kwargs)` on a request thread, in a copy of the caller's context
    (its log lines carry the request's id, as `asyncio.to_thread` does); await the result."""
    call = functools.partial(contextvars.copy_context().run, function, *args, **kwargs)
    return asyncio.get_running_loop().run_in_executor(None, call)
