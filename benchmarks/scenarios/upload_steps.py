"""Scenario 7: where the time of one small upload goes, step by step, now and before.

`benchmarks/upload_steps.py` uploads files one at a time straight into kmflow's ASGI app and
times each step of the real path (see its docstring). This runs it as a child process for this
checkout and, with `--before-rev REV`, for that revision too (a worktree first on PYTHONPATH),
in alternated rounds; each figure is the median over rounds. The report gets a table of the
steps (wall and CPU microseconds per upload, now and before) and rows for the whole request.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.context import Context, Outcome
from benchmarks.labels import size_label
from benchmarks.results import Row
from benchmarks.rounds import alternate
from benchmarks.servers import REPO, python_env, revision_checkout
from benchmarks.stats import median

SCENARIO = "7 one upload, step by step"
SCRIPT = Path(__file__).resolve().parents[1] / "upload_steps.py"
REQUEST = "the request, all of it"
NOW, BEFORE = "now", "before"
TIMEOUT_SECONDS = 600

Steps = dict[str, dict[str, float]]


def run(context: Context) -> Outcome:
    sizes = context.options.sizes
    uploads, size = sizes.step_uploads, sizes.small_bytes
    work = context.workdir
    with ExitStack() as stack:
        sources = {NOW: REPO}
        before_rev = context.options.before_rev
        if before_rev:
            sources[BEFORE] = stack.enter_context(
                revision_checkout(before_rev, work.fresh("steps-before-rev"))
            )

        def measure(name: str, source: Path) -> Callable[[int], Steps]:
            def one_round(round_number: int) -> Steps:
                directory = work.fresh(f"steps-{name}-{round_number}")
                command = [sys.executable, str(SCRIPT), "--uploads", str(uploads)]
                command += ["--bytes", str(size), "--workdir", str(directory)]
                done = subprocess.run(
                    command, env=python_env({}, source), cwd=directory, capture_output=True,
                    text=True, timeout=TIMEOUT_SECONDS, check=False,
                )  # fmt: skip
                if done.returncode != 0:
                    raise RuntimeError(f"upload_steps ({name}) failed:\n{done.stderr[-3000:]}")
                report: dict[str, Any] = json.loads(done.stdout)
                if report["missing"]:
                    context.log(f"upload steps ({name}): no such step {report['missing']}")
                steps: Steps = report["steps"]
                return steps

            return one_round

        samples = alternate(
            {name: measure(name, source) for name, source in sources.items()},
            context.options.rounds,
            sizes.scenario_budget_seconds,
            on_sample=lambda name, n, steps: context.log(
                f"upload steps r{n + 1}: {name} {steps[REQUEST]['cpu_us']:.0f} us CPU per upload"
            ),
        )
    figures = {name: medians(rounds) for name, rounds in samples.items()}
    return outcome(figures, before_rev, f"{size_label(size)}, {uploads} uploads one at a time")


def medians(rounds: list[Steps]) -> Steps:
    """Per step, the median over rounds of each figure (a step a revision lacks: absent)."""
    labels = [label for label in rounds[0] if all(label in steps for steps in rounds)]
    return {
        label: {key: median([steps[label][key] for steps in rounds]) for key in rounds[0][label]}
        for label in labels
    }


def outcome(figures: dict[str, Steps], before_rev: str | None, shape: str) -> Outcome:
    now, before = figures[NOW], figures.get(BEFORE, {})
    baseline = f"kmflow before ({before_rev})" if before_rev else ""

    def figure(steps: Steps, label: str, key: str) -> float | None:
        return steps[label][key] if label in steps else None

    rows = [
        Row(SCENARIO, f"CPU per upload, whole request ({shape})", now[REQUEST]["cpu_us"], "us",
            baseline, figure(before, REQUEST, "cpu_us")),
        Row(SCENARIO, "wall time per upload, whole request", now[REQUEST]["wall_us"], "us",
            baseline, figure(before, REQUEST, "wall_us")),
    ]  # fmt: skip
    header = "| step | wall us | CPU us |" + (" wall us before | CPU us before |" if before else "")
    lines = [
        f"**One upload, step by step ({shape}; wall: median, CPU: mean of the thread that ran "
        "the step; the whole request: CPU of every thread)**",
        "",
        header,
        "|---|---:|---:|" + ("---:|---:|" if before else ""),
    ]
    for label, step in now.items():
        cells = [label.replace("  ", "- "), f"{step['wall_us']:.0f}", f"{step['cpu_us']:.0f}"]
        if before:
            cells += [_us(figure(before, label, "wall_us")), _us(figure(before, label, "cpu_us"))]
        lines.append("| " + " | ".join(cells) + " |")
    parts = ("multipart parsing (receive_upload)", "staged file created, written, hashed",
             "commit (storage.upload), all of it")  # fmt: skip
    if all(label in now for label in parts):
        rest = now[REQUEST]["cpu_us"] - sum(now[label]["cpu_us"] for label in parts)
        lines += ["", f"The rest of the request's CPU time ({rest:.0f} us now) is the API around "
                  "the steps: middleware, key check, thread hand-offs, response, log line, "
                  "metrics; a served upload adds the HTTP parsing and the socket."]  # fmt: skip
    return Outcome(rows, ["\n".join(lines)])


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
