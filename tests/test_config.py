"""Settings: defaults from the runbook, secrets kept secret, bad values refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ConfigError
from app.settings import load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in ("STORAGE_BACKEND", "API_KEYS", "API_HOST", "MAX_UPLOAD_BYTES",
                 "DATABRICKS_TOKEN", "DATABRICKS_HOST", "DATABRICKS_CATALOG",
                 "DATABRICKS_SCHEMA", "DATABRICKS_VOLUME", "DATABRICKS_CLIENT_ID",
                 "DATABRICKS_CLIENT_SECRET"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]  # no stray .env


def test_defaults_match_the_runbook() -> None:
    settings = load_settings()
    assert settings.storage_backend == "local"
    assert str(settings.local_storage_path) == "evidence_store"
    assert settings.databricks_catalog == "kmflow"
    assert settings.databricks_schema == "evidence"
    assert settings.databricks_volume == "raw_evidence"
    assert settings.api_host == "127.0.0.1"
    assert settings.auth_mode == "open_loopback"


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    (tmp_path / ".env").write_text("DATABRICKS_CATALOG=from_dotenv\nSTORAGE_BACKEND=delta\n")  # type: ignore[operator]
    monkeypatch.setenv("STORAGE_BACKEND", "databricks")

    settings = load_settings()

    assert settings.storage_backend == "databricks"  # the environment wins over .env
    assert settings.databricks_catalog == "from_dotenv"


def test_token_and_keys_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-very-secret-token")
    monkeypatch.setenv("API_KEYS", "key-one-0123456789, key-two-0123456789 ,")

    settings = load_settings()

    assert [key.key.get_secret_value() for key in settings.api_keys] == [
        "key-one-0123456789", "key-two-0123456789",
    ]  # fmt: skip
    assert settings.databricks_token is not None
    assert "dapi-very-secret-token" not in repr(settings)
    assert "key-one" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STORAGE_BACKEND", "s3"),
        ("MAX_UPLOAD_BYTES", "lots"),
        ("API_PORT", "70000"),
        ("DATABRICKS_HOST", "adb-123.azuredatabricks.net"),
        ("API_KEYS", "short"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert "\n" not in message
    assert name in message
    if name == "API_KEYS":
        assert value not in message


def test_named_keys_carry_their_roles_and_bare_keys_are_named_by_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "API_KEYS", "bare-key-0123456789,lead:lead-key-0123456789:audit,ci.bot:ci-key-0123456789"
    )

    keys = load_settings().api_keys

    assert [(key.name, sorted(key.roles)) for key in keys] == [
        ("key-1", []), ("lead", ["audit"]), ("ci.bot", []),
    ]  # fmt: skip
    assert keys[1].key.get_secret_value() == "lead-key-0123456789"
    assert "lead-key" not in repr(keys) and "bare-key" not in repr(keys)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("same:first-key-0123456789,same:second-key-0123456789", "two keys named 'same'"),
        ("lead:lead-key-0123456789:admin", "entry 1: 1 unknown role(s)"),
        ("bad name:lead-key-0123456789", "entry 1: a key's name"),
        ("ok-key-0123456789,lead:short", "entry 2: a key must be at least 16"),
    ],
)
def test_bad_key_entries_are_refused_by_position_without_their_text(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("API_KEYS", value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert problem in message and "API_KEYS" in message
    for secret in ("first-key", "second-key", "lead-key", "short", "ok-key"):
        assert secret not in message


def test_unknown_backend_lists_the_valid_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_BACKEND", "s3")
    with pytest.raises(ConfigError, match="'local', 'delta' or 'databricks'"):
        load_settings()


def test_open_service_off_loopback_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_HOST", "0.0.0.0")
    with pytest.raises(ConfigError, match="API_KEYS"):
        load_settings()
    monkeypatch.setenv("API_KEYS", "a-long-enough-key-123")
    assert load_settings().auth_mode == "api_keys"


CLIENT_SECRET = "dose-config-test-secret-0123456789"


def test_oauth_client_credentials_are_read_from_dotenv_and_kept_secret(
    tmp_path: object,
) -> None:
    (tmp_path / ".env").write_text(  # type: ignore[operator]
        f"DATABRICKS_CLIENT_ID=app-id-123\nDATABRICKS_CLIENT_SECRET={CLIENT_SECRET}\n"
    )

    settings = load_settings()

    assert settings.databricks_client_id == "app-id-123"
    assert settings.databricks_client_secret is not None
    assert settings.databricks_client_secret.get_secret_value() == CLIENT_SECRET
    assert settings.databricks_auth_type == "oauth-m2m"
    assert CLIENT_SECRET not in repr(settings)
    assert settings.model_dump(mode="json")["databricks_client_secret"] == "**********"


def test_empty_credentials_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert settings.databricks_auth_type is None
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-a-token")
    assert load_settings().databricks_auth_type == "pat"


def test_a_token_and_client_credentials_together_are_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-config-test-token-0123")
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", "app-id-123")
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", CLIENT_SECRET)

    with pytest.raises(ConfigError) as raised:
        load_settings()

    message = str(raised.value)
    assert "\n" not in message
    assert "DATABRICKS_TOKEN" in message and "DATABRICKS_CLIENT_ID" in message
    assert "not both" in message
    assert CLIENT_SECRET not in message and "dapi-config-test-token-0123" not in message


@pytest.mark.parametrize(
    ("present", "missing"),
    [("DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"),
     ("DATABRICKS_CLIENT_SECRET", "DATABRICKS_CLIENT_ID")],
)  # fmt: skip
def test_client_id_and_secret_come_together(
    monkeypatch: pytest.MonkeyPatch, present: str, missing: str
) -> None:
    monkeypatch.setenv(present, CLIENT_SECRET)
    with pytest.raises(ConfigError, match=f"{missing} is not set") as raised:
        load_settings()
    assert CLIENT_SECRET not in str(raised.value)


def test_serve_refuses_two_databricks_auth_methods_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    monkeypatch.setenv("STORAGE_BACKEND", "databricks")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-config-test-token-0123")
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", "app-id-123")
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", CLIENT_SECRET)

    assert main(["serve"]) == 2

    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "DATABRICKS_CLIENT_SECRET" in error
    assert CLIENT_SECRET not in error and "dapi-config-test-token-0123" not in error


def test_unity_catalog_names_are_lower_cased(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_CATALOG", "KmFlow")
    monkeypatch.setenv("DATABRICKS_SCHEMA", "Evidence")
    monkeypatch.setenv("DATABRICKS_VOLUME", "RAW_Evidence")

    settings = load_settings()

    assert (settings.databricks_catalog, settings.databricks_schema) == ("kmflow", "evidence")
    assert settings.databricks_volume == "raw_evidence"


def test_serve_refuses_sqlite_state_on_a_network_filesystem_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The local backend's index on an NFS share (this process's mountinfo says so, faked
    here: there is no NFS on this machine) stops `kmflow serve` before anything starts."""
    from app.cli import main
    from app.storage import filesystems

    share = tmp_path / "share"
    share.mkdir()
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 0:50 / {share} rw - nfs4 nas:/export rw\n"
    )
    monkeypatch.setattr(filesystems, "MOUNTINFO", mountinfo)
    monkeypatch.setenv("STATE_PATH", str(share / "kmflow_state"))

    def serving(*args: object, **kwargs: object) -> None:
        raise AssertionError("kmflow serve started")

    monkeypatch.setattr("uvicorn.run", serving)  # if not refused, fail rather than serve
    assert main(["serve"]) == 2

    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"kmflow: invalid configuration: STATE_PATH={share / 'kmflow_state'}")
    assert "network filesystem (nfs4" in error and "put STATE_PATH on a local disk" in error
    assert not (share / "kmflow_state").exists()  # refused before anything was created


def test_state_path_unset_follows_the_store_so_each_store_has_its_own_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def state_for(store: str) -> Path:
        return load_settings(local_storage_path=Path(store)).state_path

    assert load_settings().state_path == Path("kmflow_state")
    assert state_for("/data/evidence_store") == Path("/data/kmflow_state")
    assert state_for("/data/rollback") == Path("/data/rollback.kmflow_state")
    assert state_for("/data/rollback") != state_for("/data/other")
    monkeypatch.setenv("STATE_PATH", "/var/lib/kmflow")
    assert state_for("/data/rollback") == Path("/var/lib/kmflow")  # set: used as it is


@pytest.mark.parametrize(
    "value",
    ["*", "https://*.example.com", "https://evidence.example.com/app", "evidence.example.com"],
)
def test_cors_origins_must_be_exact(value: str) -> None:
    with pytest.raises(ConfigError, match=r"CORS_ORIGINS: .* is not an exact origin"):
        load_settings(_env_file=None, cors_origins=value)


def test_a_short_signing_secret_is_refused_without_quoting_it() -> None:
    with pytest.raises(ConfigError, match="LINK_SIGNING_SECRET: must be at least 32") as raised:
        load_settings(_env_file=None, link_signing_secret="short-secret-value")
    assert "short-secret-value" not in str(raised.value)
