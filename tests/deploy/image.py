"""The image without Docker: runs the Dockerfile's build steps on this machine with every
absolute path of the image moved under one directory, and says how its CMD starts.

What is run is read from the Dockerfile (tests/deploy/dockerfile.py), never restated: the
build stage's ARG defaults, ENV, WORKDIR, COPY and RUN (with `/bin/sh -c`, as Docker runs the
shell form), then the final stage's ENV, WORKDIR and CMD. The final stage's RUN creates the
image's user and its /data; here the test's own user and a fresh directory stand in for them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.dockerfile import (
    ROOT,
    Dockerfile,
    Instruction,
    arg_default,
    env_pairs,
    expand,
)

# Instructions that only describe the image to the container runtime.
_METADATA = {"USER", "EXPOSE", "HEALTHCHECK", "CMD", "LABEL"}
# The final stage's RUN may only create the user and its /data, which this test stands in for.
_USER_SETUP = {"groupadd", "useradd", "install"}
# How this machine reaches the package registry, as `docker build --build-arg` would pass it.
_REGISTRY_ACCESS = ("PIP_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy")


@dataclass
class Container:
    root: Path  # stands for the image's `/`
    env: dict[str, str]  # the environment the image gives its CMD
    workdir: Path
    cmd: list[str]

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")


def build(dockerfile: Dockerfile, root: Path) -> Container:
    base_env = _base_image_env(root)
    env: dict[str, str] = {}
    workdir = root
    for stage in dockerfile.stages:
        args: dict[str, str] = {}  # global ARGs reach only FROM lines
        env = {}
        workdir = root
        final = stage is dockerfile.final
        for item in stage.instructions:
            if item.keyword == "ARG":
                args.update(arg_default(item))
            elif item.keyword == "ENV":
                env.update(_env(item, root, {**base_env, **args, **env}))
            elif item.keyword == "WORKDIR":
                workdir = root / expand(item.arguments, env).lstrip("/")
                workdir.mkdir(parents=True, exist_ok=True)
            elif item.keyword == "COPY":
                _copy(item, workdir, root)
            elif item.keyword == "RUN" and not final:
                registry = {k: v for k, v in os.environ.items() if k.startswith(_REGISTRY_ACCESS)}
                subprocess.run(
                    ["/bin/sh", "-c", item.arguments],
                    env={**base_env, **registry, **args, **env},
                    cwd=workdir,
                    check=True,
                )
            elif item.keyword == "RUN":
                commands = {step.split()[0] for step in item.arguments.split("&&")}
                assert commands <= _USER_SETUP, f"cannot stand in for: {item.arguments}"
            elif item.keyword not in _METADATA:
                raise AssertionError(f"tests/deploy/image.py cannot run {item.keyword} yet")
    cmd = dockerfile.final.one("CMD").exec_form()
    return Container(root, {**base_env, **env}, workdir, cmd)


def _base_image_env(root: Path) -> dict[str, str]:
    """The python image's own environment: its `python` first on PATH (here: this machine's
    interpreter, not a virtual environment's)."""
    bin_dir = root / "usr/local/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = bin_dir / "python"
    if not python.exists():
        python.symlink_to(getattr(sys, "_base_executable", sys.executable))
    return {"PATH": f"{bin_dir}:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def _env(item: Instruction, root: Path, before: dict[str, str]) -> dict[str, str]:
    """ENV values see the variables as they were before this instruction, as in Docker."""
    values = {}
    for name, raw in env_pairs(item):
        value = expand(raw, before)
        values[name] = str(root / value.lstrip("/")) if raw.startswith("/") else value
    return values


def _copy(item: Instruction, workdir: Path, root: Path) -> None:
    words = item.arguments.split()
    if words[0].startswith("--from="):
        # The build stage's files are already at the same place under the same root.
        source, target = words[1:]
        assert source == target, f"COPY --from must keep the path here: {item.arguments}"
        return
    *sources, target = words
    destination = root / target.lstrip("/") if target.startswith("/") else workdir / target
    for source in sources:
        origin = ROOT / source
        if origin.is_dir():
            shutil.copytree(origin, destination, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            where = destination if len(sources) == 1 and not target.endswith("/") else None
            where = where or destination / origin.name
            where.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, where)
