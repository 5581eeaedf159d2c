"""Reads the Dockerfile into stages and instructions, so tests run what it says rather than a
copy of it: enough of the Dockerfile grammar for ours (comments, line continuations, ARG, ENV
with quotes and `$VAR` references, JSON exec form)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, ...
    arguments: str  # the rest, continuations joined

    def exec_form(self) -> list[str]:
        """The JSON array of CMD / ENTRYPOINT / HEALTHCHECK CMD; refuses the shell form."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            text = text[text.index("CMD ") + 4 :]
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(part, str) for part in value)
        return value


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [item for item in self.instructions if item.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name}, found {len(found)}"
        return found[0]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(stage for stage in self.stages if stage.name == name)

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def instructions(text: str) -> list[Instruction]:
    found: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, rest = whole.partition(" ")
        found.append(Instruction(keyword.upper(), rest.strip()))
    return found


def parse(path: Path = DOCKERFILE) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for item in instructions(path.read_text(encoding="utf-8")):
        if item.keyword == "FROM":
            words = item.arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(expand(words[0], global_args), name))
        elif not stages:
            assert item.keyword == "ARG", f"{item.keyword} before the first FROM"
            global_args.update(arg_default(item))
        else:
            stages[-1].instructions.append(item)
    return Dockerfile(global_args, stages)


def arg_default(item: Instruction) -> dict[str, str]:
    name, _, default = item.arguments.partition("=")
    return {name: default}


def env_pairs(item: Instruction) -> list[tuple[str, str]]:
    """`ENV A=1 B="x y"` -> [("A", "1"), ("B", "x y")], values not yet expanded."""
    pairs = []
    for word in shlex.split(item.arguments, posix=True):
        name, sep, value = word.partition("=")
        assert sep, f"ENV in legacy `ENV name value` form: {item.arguments}"
        pairs.append((name, value))
    return pairs


def expand(value: str, variables: dict[str, str]) -> str:
    """Docker's `$VAR` / `${VAR}` substitution (unset -> empty)."""
    return _VARIABLE.sub(lambda match: variables.get(match[1] or match[2], ""), value)
