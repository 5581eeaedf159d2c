"""The databricks backend's settings: read with the other settings (`app.settings.Settings`),
from the same environment variables, and checked at startup with them."""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings

# Unity Catalog object names kmflow accepts: they are quoted with backticks in SQL, never bound.
_UC_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,254}")


class DatabricksSettings(BaseSettings):
    # Databricks backend (names and defaults from docs/databricks-upgrade-runbook.md).
    databricks_host: str | None = None
    # One way to authenticate: a token, or a service principal's OAuth M2M client credentials
    # (its application id and an OAuth secret); none: the SDK's own credential chain.
    databricks_token: SecretStr | None = None
    databricks_client_id: str | None = None
    databricks_client_secret: SecretStr | None = None
    # Unity Catalog keeps these names in lower case; they are lower-cased here (see below).
    databricks_catalog: str = "kmflow"
    databricks_schema: str = "evidence"
    databricks_volume: str = "raw_evidence"
    databricks_warehouse_id: str | None = None
    # How long one SQL statement may run (waiting, then polling) before kmflow gives up on it;
    # an upload whose metadata insert gives up still succeeds: the row waits in the outbox.
    databricks_statement_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # The SDK's own retry budget for 429/503 and connection errors, and its per-request timeout.
    databricks_retry_timeout_seconds: int = Field(default=60, ge=1, le=3600)
    databricks_http_timeout_seconds: int = Field(default=60, ge=1, le=3600)
    # How often queued metadata rows are retried while the warehouse does not answer.
    databricks_outbox_retry_seconds: float = Field(default=5.0, gt=0, le=3600)

    @field_validator(
        "databricks_host",
        "databricks_token",
        "databricks_client_id",
        "databricks_client_secret",
        "databricks_warehouse_id",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("databricks_catalog", "databricks_schema", "databricks_volume")
    @classmethod
    def _unity_catalog_name(cls, value: str) -> str:
        """Lower case: Unity Catalog stores catalog, schema and volume names in lower case and
        matches them case-insensitively, but `/Volumes/...` paths and the names kmflow compares
        (grants, listings) are the stored, lower-case ones: `Kmflow` would miss them."""
        if not _UC_NAME.fullmatch(value):
            raise ValueError("must be 1-255 letters, digits, '_' or '-'")
        return value.lower()

    @field_validator("databricks_host")
    @classmethod
    def _host_is_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("must be a URL starting with https://")
        return value or None

    @model_validator(mode="after")
    def _one_databricks_auth_method(self) -> Self:
        """Chosen here, not by the SDK: given a token and client credentials at once it refuses
        ("more than one authorization method configured"), and only at the first request."""
        client_id, secret = self.databricks_client_id, self.databricks_client_secret
        if (client_id is None) != (secret is None):
            missing = "DATABRICKS_CLIENT_SECRET" if secret is None else "DATABRICKS_CLIENT_ID"
            raise ValueError(
                f"{missing} is not set: OAuth M2M needs both DATABRICKS_CLIENT_ID and "
                "DATABRICKS_CLIENT_SECRET"
            )
        if self.databricks_token is not None and client_id is not None:
            raise ValueError(
                "DATABRICKS_TOKEN and DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET are both set: "
                "configure one Databricks authentication method (a token, or OAuth M2M client "
                "credentials), not both"
            )
        return self

    @property
    def databricks_auth_type(self) -> Literal["pat", "oauth-m2m"] | None:
        """The SDK's name for the configured method; None: the SDK's own credential chain."""
        if self.databricks_token is not None:
            return "pat"
        if self.databricks_client_id is not None:
            return "oauth-m2m"
        return None

    @property
    def databricks_credentials(self) -> str:
        """Where an operator fixes Databricks authentication, for error messages."""
        return {
            "pat": "DATABRICKS_TOKEN",
            "oauth-m2m": "DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET",
            None: "the Databricks SDK's own credentials, a profile or its environment (or set "
            "DATABRICKS_TOKEN, or DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET)",
        }[self.databricks_auth_type]
