"""docker-compose.yml and deploy/kubernetes/ against their published schemas, offline, and
against kmflow's own settings; .env.example against Settings.

Schemas: the compose spec ships inside check-jsonschema (`vendor.compose-spec`); the
Kubernetes OpenAPI-derived JSON schemas ship inside kubernetes-validate, one set per
Kubernetes version (strict: unknown fields are errors). Neither fetches anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from app.config import Settings
from tests.deploy.dockerfile import ROOT

KUBERNETES = ROOT / "deploy" / "kubernetes"
# The oldest release these must work on, and the newest the installed package knows.
KUBERNETES_VERSIONS = ["1.30.0", latest_version()]
SECRETS = {"API_KEYS", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_SECRET"}
# Kept in the Secret, with its secret, though not secret itself: one object holds the method.
IN_THE_SECRET = SECRETS | {"DATABRICKS_CLIENT_ID"}
OAUTH_M2M = {"DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"}
SETTINGS = {name.upper() for name in Settings.model_fields}


def manifests() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def test_compose_file_matches_the_compose_spec() -> None:
    result = subprocess.run(
        [
            Path(sys.executable).parent / "check-jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            ROOT / "docker-compose.yml",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_the_api_on_a_named_volume_with_health_and_restart() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    api = compose["services"]["api"]
    assert api["build"] == "."
    assert api["env_file"] == [{"path": ".env", "required": False}]
    assert api["volumes"] == ["kmflow-data:/data"] and "kmflow-data" in compose["volumes"]
    assert "/api/v1/health" in api["healthcheck"]["test"][-1]
    assert api["restart"] == "unless-stopped"
    assert api["stop_grace_period"] == "45s"  # > uvicorn's 30 s for uploads in flight
    assert "profiles" not in api
    assert compose["services"]["minilake"]["profiles"] == ["databricks"]
    assert compose["services"]["api-databricks"]["profiles"] == ["databricks"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", sorted(manifests()))
def test_kubernetes_manifest_matches_the_schema(name: str, version: str) -> None:
    assert kubernetes_validate.validate(manifests()[name], version, strict=True) == version[:4]


def test_the_kubernetes_schemas_are_strict() -> None:
    """A misspelt field fails: the check above is not vacuous."""
    service = manifests()["Service/kmflow"]
    broken = {**service, "spec": {**service["spec"], "selektor": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_deployment_probes_security_and_volumes() -> None:
    found = manifests()
    pod = found["Deployment/kmflow"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # Liveness and startup on the process alone: a backend outage must not restart the pod.
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/api/v1/health/live", "port": "http"}
    # Readiness on the backend: out of the Service while it cannot be reached.
    assert container["readinessProbe"]["httpGet"] == {"path": "/api/v1/health", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert set(mounts) == {"/data", "/tmp"}
    claim = volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"]
    assert f"PersistentVolumeClaim/{claim}" in found
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert pod["terminationGracePeriodSeconds"] > 30  # uvicorn's graceful shutdown
    # One pod per claim (STATE_PATH is per pod), the old one gone before the new one mounts it.
    assert found["Deployment/kmflow"]["spec"]["replicas"] == 1
    assert found["Deployment/kmflow"]["spec"]["strategy"] == {"type": "Recreate"}


def test_configuration_comes_from_the_configmap_and_the_secret() -> None:
    found = manifests()
    (container,) = found["Deployment/kmflow"]["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [
        {"configMapRef": {"name": "kmflow-config"}},
        {"secretRef": {"name": "kmflow-secrets"}},
    ]
    config = found["ConfigMap/kmflow-config"]["data"]
    secret = found["Secret/kmflow-secrets"]["stringData"]
    assert set(config) <= SETTINGS - IN_THE_SECRET
    assert set(secret) <= IN_THE_SECRET and "API_KEYS" in secret
    # Paths on the /data volume, the same filesystem for both (atomic renames).
    assert config["LOCAL_STORAGE_PATH"].startswith("/data/")
    assert config["STATE_PATH"].startswith("/data/")
    # Placeholders fail closed: an unfilled template's API key is refused at startup.
    with pytest.raises(ValueError, match="at least 16 characters"):
        Settings(_env_file=None, **{name.lower(): v for name, v in {**config, **secret}.items()})  # type: ignore[call-arg]
    the_rest = {name.lower(): value for name, value in config.items()}
    Settings(_env_file=None, api_keys="k" * 32, **the_rest)  # type: ignore[call-arg]


def test_env_example_documents_every_setting_with_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    values = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert set(values) == SETTINGS
    examples = {"DATABRICKS_HOST"} | OAUTH_M2M  # marked "example values" in the file
    documented = Settings(
        _env_file=None,  # type: ignore[call-arg]
        **{name.lower(): value for name, value in values.items() if name not in examples},
    )
    assert documented.model_dump() == Settings(_env_file=None).model_dump()  # type: ignore[call-arg]

    # The file as it is, examples included, is a configuration kmflow starts with (copied
    # to .env, say): one Databricks authentication method, not two.
    Settings(_env_file=None, **{name.lower(): value for name, value in values.items()})  # type: ignore[call-arg]


def test_the_secret_template_sets_one_databricks_auth_method_and_documents_the_other() -> None:
    """Applied as it is, the template never yields two methods (kmflow would refuse to start);
    the token is there, commented out, for whoever uses one instead."""
    path = KUBERNETES / "secret.template.yaml"
    secret = manifests()["Secret/kmflow-secrets"]["stringData"]
    commented = {
        line.strip().removeprefix("# ").split(":", 1)[0]
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("  # DATABRICKS_")
    }

    assert set(secret) & IN_THE_SECRET - {"API_KEYS"} == OAUTH_M2M
    assert commented == {"DATABRICKS_TOKEN"}
    filled = {"api_keys": "k" * 32, "databricks_host": "https://adb-1.azuredatabricks.net"}
    oauth = Settings(_env_file=None, **filled, **{n.lower(): "x" for n in OAUTH_M2M})  # type: ignore[call-arg]
    assert oauth.databricks_auth_type == "oauth-m2m"
    token = Settings(_env_file=None, **filled, databricks_token="dapi-x")  # type: ignore[call-arg]
    assert token.databricks_auth_type == "pat"
    with pytest.raises(ValueError, match="not both"):  # uncommented without deleting the rest
        Settings(_env_file=None, **filled, databricks_token="dapi-x",  # type: ignore[call-arg]
                 **{n.lower(): "x" for n in OAUTH_M2M})  # fmt: skip
