"""One CPU per worker process of `kmflow serve`, when there are as many workers as CPUs.

A worker is one Python process: its event loop and its request threads share one GIL, and
each upload hands the GIL between them several times (the loop receives, a thread commits,
the loop answers). Left to the scheduler, two workers on two cores keep moving those threads
from core to core: measured on the 2-core benchmark machine (16 KiB uploads, c32), two workers
answered 590-605 uploads/s unpinned and 795-840/s with each pinned to a core of its own, and
one worker pinned to a core spent 1.05 ms of user CPU per upload against 1.65-1.8 ms free.

A worker is pinned only when the workers fill the CPUs this process may run on: with spare
cores, one upload's hashing and disk writes run beside its receiving on another core (a 1 GiB
upload with two pinned workers: 215-250 MB/s, against 300-320 free), and on a node shared under
a CPU quota (Kubernetes without a cpuset) no core is kmflow's to take. Each worker takes the
first free CPU by an `flock` on `STATE_PATH/cpus/<cpu>.lock`, held for its life: the kernel
drops it when the worker dies, so its replacement takes the same CPU.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def pin_worker(lock_directory: Path, workers: int) -> int | None:
    """Pin this process (the calling thread and every thread it starts) to one CPU; the CPU,
    or None when it is left free. Call it before any thread starts."""
    if not hasattr(os, "sched_setaffinity"):  # Linux only (macOS has no such call)
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if workers < 2 or len(allowed) > workers:
        return None
    lock_directory.mkdir(parents=True, exist_ok=True)
    for cpu in allowed:
        descriptor = os.open(lock_directory / f"{cpu}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue
        # Held, never closed: the lock lives as long as this worker.
        os.sched_setaffinity(0, {cpu})
        logger.info("worker %d runs on CPU %d (one worker per CPU)", os.getpid(), cpu)
        return cpu
    return None  # more workers than CPUs: this one is left to the scheduler
