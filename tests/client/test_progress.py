"""The progress bar draws for a person at a terminal and stays out of pipes and logs."""

from __future__ import annotations

import io

from app.progress import progress_bar
from app.sizes import MIB


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_large_transfer_on_a_terminal_ends_on_a_full_bar() -> None:
    screen = Terminal()
    bar = progress_bar("upload recording.mp4", 64 * MIB, quiet=False, stream=screen)
    for done in range(0, 64 * MIB + 1, 4 * MIB):
        bar.update(done)
    bar.close()

    drawn = screen.getvalue()
    assert drawn.startswith("\rupload recording.mp4")
    assert drawn.endswith("\n")
    last = drawn.rsplit("\r", 1)[-1]
    assert "[" + "#" * 24 + "] 100% 64.0/64.0 MiB" in last


def test_no_bar_in_a_pipe_for_a_small_file_or_when_quiet() -> None:
    pipe, small, quiet = io.StringIO(), Terminal(), Terminal()
    cases = [(pipe, 64 * MIB, False), (small, MIB, False), (quiet, 64 * MIB, True)]
    for stream, size, silenced in cases:
        bar = progress_bar("download x", size, quiet=silenced, stream=stream)
        bar.update(size)
        bar.close()
        assert stream.getvalue() == ""
