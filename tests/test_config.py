"""Settings: defaults from the runbook, secrets kept secret, bad values refused by name."""

from __future__ import annotations

import pytest

from app.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in ("STORAGE_BACKEND", "API_KEYS", "API_HOST", "MAX_UPLOAD_BYTES",
                 "DATABRICKS_TOKEN", "DATABRICKS_HOST", "DATABRICKS_CATALOG"):  # fmt: skip
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

    assert [key.get_secret_value() for key in settings.api_keys] == [
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
