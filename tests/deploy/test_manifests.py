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

from app.settings import Settings
from tests.deploy.dockerfile import ROOT

KUBERNETES = ROOT / "deploy" / "kubernetes"
# Replicas of a shared backend: its own Deployment and PodDisruptionBudget, the rest shared.
REPLICAS = KUBERNETES / "databricks"
# The oldest release these must work on, and the newest the installed package knows.
KUBERNETES_VERSIONS = ["1.30.0", latest_version()]
SECRETS = {"API_KEYS", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_SECRET", "LINK_SIGNING_SECRET"}
# Kept in the Secret, with its secret, though not secret itself: one object holds the method.
IN_THE_SECRET = SECRETS | {"DATABRICKS_CLIENT_ID"}
OAUTH_M2M = {"DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"}
SETTINGS = {name.upper() for name in Settings.model_fields}


def manifests(directory: Path = KUBERNETES) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(directory.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def every_manifest() -> dict[str, dict[str, Any]]:
    """Both variants' files, as `databricks/Deployment/kmflow` for a file of a subdirectory."""
    found = {}
    for directory in sorted({path.parent for path in KUBERNETES.rglob("*.yaml")}):
        prefix = directory.relative_to(KUBERNETES).as_posix()
        for name, document in manifests(directory).items():
            found[name if prefix == "." else f"{prefix}/{name}"] = document
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
@pytest.mark.parametrize("name", sorted(every_manifest()))
def test_kubernetes_manifest_matches_the_schema(name: str, version: str) -> None:
    document = every_manifest()[name]
    assert kubernetes_validate.validate(document, version, strict=True) == version[:4]


def test_the_replicas_variant_is_a_deployment_and_a_disruption_budget() -> None:
    """...and nothing the schema check above would miss: both files are found and loaded."""
    assert set(every_manifest()) - set(manifests()) == {
        "databricks/Deployment/kmflow",
        "databricks/PodDisruptionBudget/kmflow",
    }


def test_the_kubernetes_schemas_are_strict() -> None:
    """A misspelt field fails: the check above is not vacuous."""
    service = manifests()["Service/kmflow"]
    broken = {**service, "spec": {**service["spec"], "selektor": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("directory", [KUBERNETES, REPLICAS], ids=["local", "databricks"])
def test_deployment_probes_and_security(directory: Path) -> None:
    pod = manifests(directory)["Deployment/kmflow"]["spec"]["template"]["spec"]
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
    assert pod["terminationGracePeriodSeconds"] == 45  # > uvicorn's graceful shutdown, 30 s


def test_the_local_deployment_is_one_pod_on_its_claim() -> None:
    found = manifests()
    pod = found["Deployment/kmflow"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert set(mounts) == {"/data", "/tmp"}
    claim = volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"]
    assert f"PersistentVolumeClaim/{claim}" in found
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # One pod per claim (STATE_PATH is per pod), the old one gone before the new one mounts it.
    assert found["Deployment/kmflow"]["spec"]["replicas"] == 1
    assert found["Deployment/kmflow"]["spec"]["strategy"] == {"type": "Recreate"}
    assert "env" not in container  # STORAGE_BACKEND from the ConfigMap: any backend, one pod


def test_the_databricks_deployment_is_replicas_without_a_claim() -> None:
    deployment = manifests(REPLICAS)["Deployment/kmflow"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}

    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert not [volume for volume in pod["volumes"] if "persistentVolumeClaim" in volume]
    assert set(mounts) == {"/data", "/tmp"}
    assert set(volumes[mounts["/data"]]) == {"name", "emptyDir"}  # scratch, lost with the pod
    assert set(volumes[mounts["/tmp"]]) == {"name", "emptyDir"}
    # Pinned to a backend that keeps nothing in STATE_PATH, whatever the shared ConfigMap says.
    assert container["env"] == [{"name": "STORAGE_BACKEND", "value": "databricks"}]


def test_the_databricks_deployment_differs_from_the_local_one_only_in_how_it_scales() -> None:
    """It is a copy (kubectl apply -f cannot patch): probes, resources, security, image and
    grace period stay the local Deployment's. Same name and labels: applying one replaces the
    other, and the Service and the ConfigMap serve both."""
    local, replicas = manifests()["Deployment/kmflow"], manifests(REPLICAS)["Deployment/kmflow"]
    scaling = {"replicas", "strategy"}
    pod_scaling = {"volumes", "topologySpreadConstraints"}

    def without(mapping: dict[str, Any], keys: set[str]) -> dict[str, Any]:
        return {key: value for key, value in mapping.items() if key not in keys}

    assert without(local, {"spec"}) == without(replicas, {"spec"})
    assert without(local["spec"], scaling | {"template"}) == without(
        replicas["spec"], scaling | {"template"}
    )
    local_pod, replicas_pod = local["spec"]["template"], replicas["spec"]["template"]
    assert local_pod["metadata"] == replicas_pod["metadata"]
    assert without(local_pod["spec"], pod_scaling | {"containers"}) == without(
        replicas_pod["spec"], pod_scaling | {"containers"}
    )
    (local_container,) = local_pod["spec"]["containers"]
    (replicas_container,) = replicas_pod["spec"]["containers"]
    assert without(local_container, {"env"}) == without(replicas_container, {"env"})
    # The volumes differ in their source only: same names, so the mounts above are the same.
    assert [v["name"] for v in local_pod["spec"]["volumes"]] == [
        v["name"] for v in replicas_pod["spec"]["volumes"]
    ]


def test_the_disruption_budget_covers_the_databricks_pods_one_at_a_time() -> None:
    found = manifests(REPLICAS)
    budget = found["PodDisruptionBudget/kmflow"]["spec"]
    deployment = found["Deployment/kmflow"]["spec"]
    pod_labels = deployment["template"]["metadata"]["labels"]

    assert budget["selector"] == deployment["selector"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["maxUnavailable"] == 1 and "minAvailable" not in budget
    assert deployment["replicas"] - budget["maxUnavailable"] >= 2  # a drain leaves two serving
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"  # a backend outage unreadies all
    # The shared Service sends traffic to the same pods.
    assert manifests()["Service/kmflow"]["spec"]["selector"].items() <= pod_labels.items()


def test_the_databricks_variant_starts_with_scratch_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared ConfigMap plus the Deployment's env is a configuration kmflow accepts, with
    STATE_PATH scratch, so no STATE_PATH check can refuse it on whatever volume /data is."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    config = manifests()["ConfigMap/kmflow-config"]["data"]
    (container,) = manifests(REPLICAS)["Deployment/kmflow"]["spec"]["template"]["spec"][
        "containers"
    ]
    environment = {**config, **{item["name"]: item["value"] for item in container["env"]}}
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        api_keys="k" * 32,
        **{name.lower(): value for name, value in environment.items()},
    )
    assert settings.storage_backend == "databricks"
    assert settings.state_path_is_scratch


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
