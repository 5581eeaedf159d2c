"""`python -m benchmarks`: run the chosen scenarios one after another, then print the table
and write the report. A scenario that fails gets a line saying so and the run goes on, so
one broken target never hides the figures of the others; the exit status is then 1."""

from __future__ import annotations

import shlex
import sys
import traceback
from collections.abc import Sequence

from benchmarks import machine, preflight, report
from benchmarks.context import Context, Outcome
from benchmarks.options import parse_options
from benchmarks.results import failed_row
from benchmarks.scenarios import REGISTRY
from benchmarks.workdir import DEFAULT_PARENT, Workdir


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    trouble = preflight.problems(options, options.workdir or DEFAULT_PARENT)
    if trouble:
        print("cannot run the benchmarks:\n- " + "\n- ".join(trouble), file=sys.stderr)
        return 2
    workdir = Workdir(options.workdir)
    context = Context(options, workdir)
    context.log(f"scratch space: {workdir.root}")
    outcome = Outcome()
    failures = 0
    try:
        for name in options.scenarios:
            context.log(f"scenario {name}")
            try:
                result = REGISTRY[name](context)
            except Exception as error:  # noqa: BLE001 - reported in the table and exit status
                failures += 1
                context.log(f"scenario {name} FAILED:\n{traceback.format_exc()}")
                outcome.rows.append(failed_row(name, f"{type(error).__name__}: {error}"))
                outcome.details.append(f"**{name} failed**\n\n```\n{str(error)[-3000:]}\n```")
                continue
            outcome.rows += result.rows
            outcome.details += result.details
        description = machine.describe(workdir.root)
    finally:
        if options.keep_workdir:
            context.log(f"kept {workdir.root}")
        else:
            context.log("removing the scratch space")
            workdir.cleanup()
    args = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "-m", "benchmarks", *args])
    text = report.render(outcome.rows, description, outcome.details, options, command)
    print(text)
    if options.results is not None:
        report.write(options.results, text)
        context.log(f"written to {options.results}")
    return 1 if failures else 0
