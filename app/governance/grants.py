"""The service principal's Unity Catalog privileges, held against the runbook's list.

The runbook grants `kmflow-api` exactly: USE CATALOG, USE SCHEMA, CREATE SCHEMA on the catalog;
CREATE TABLE, MODIFY, SELECT on each schema; READ VOLUME, WRITE VOLUME on the volume. A
privilege is "too broad" when it is not on that list for the level it was granted at:
ALL_PRIVILEGES or MANAGE anywhere, SELECT on the whole catalog (it then reaches every schema,
present and future), anything granted on the metastore. The same privilege granted lower down
(USE SCHEMA on one schema, SELECT on one table) is narrower, and accepted. Owning an object
counts as too broad: an owner holds every privilege on it.

Effective privileges (direct and inherited) are read from the REST API as raw JSON on purpose:
the SDK's typed model turns a privilege name it does not know into `None`, and an audit must
not drop the one grant it has never heard of.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound

from app.governance.errors import GovernanceError
from app.governance.uc_objects import TRANSPORT_ERRORS, explain

# Privileges the runbook allows, by the level they are granted at.
ALLOWED_AT: dict[str, frozenset[str]] = {
    "CATALOG": frozenset({"USE_CATALOG", "USE_SCHEMA", "CREATE_SCHEMA"}),
    "SCHEMA": frozenset({"USE_SCHEMA", "CREATE_TABLE", "MODIFY", "SELECT"}),
    "VOLUME": frozenset({"READ_VOLUME", "WRITE_VOLUME"}),
    "TABLE": frozenset({"MODIFY", "SELECT"}),
}
# What the runbook grants, and so what kmflow needs, on each kind of object.
REQUIRED_ON: dict[str, frozenset[str]] = {
    "CATALOG": frozenset({"USE_CATALOG", "USE_SCHEMA", "CREATE_SCHEMA"}),
    "SCHEMA": frozenset({"CREATE_TABLE", "MODIFY", "SELECT"}),
    "VOLUME": frozenset({"READ_VOLUME", "WRITE_VOLUME"}),
}


@dataclass(frozen=True, order=True)
class Securable:
    type: str  # CATALOG, SCHEMA, VOLUME, TABLE (upper case, as the API reports sources)
    full_name: str

    def __str__(self) -> str:
        return f"{self.type.lower()} {self.full_name}"


@dataclass(frozen=True, order=True)
class Grant:
    granted_on: Securable  # first, so reports list grants object by object
    privilege: str


@dataclass
class GrantAudit:
    principal: str
    grants: set[Grant] = field(default_factory=set)
    too_broad: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def audit_grants(
    client: WorkspaceClient, principal: str, securables: Iterable[Securable]
) -> GrantAudit:
    """Every privilege `principal` holds on (or above) the securables, judged by the runbook."""
    audit = GrantAudit(principal)
    for securable in sorted(set(securables)):
        try:
            held = _effective(client, principal, securable)
            owner = _owner(client, securable)
        except NotFound:
            continue  # nothing to hold privileges on; the registration check reports it
        except TRANSPORT_ERRORS as error:
            raise explain(
                error, f"cannot read grants on {securable}", "MANAGE on it (or to own it)"
            ) from error
        audit.grants |= held
        if owner == principal:
            audit.too_broad.append(f"owns {securable} (an owner holds every privilege)")
        have = {grant.privilege for grant in held}
        audit.missing += [
            f"{privilege} on {securable}"
            for privilege in sorted(REQUIRED_ON.get(securable.type, frozenset()) - have)
        ]
    audit.too_broad += [
        f"{grant.privilege} on {grant.granted_on}"
        for grant in sorted(audit.grants)
        if grant.privilege not in ALLOWED_AT.get(grant.granted_on.type, frozenset())
    ]
    return audit


def _effective(client: WorkspaceClient, principal: str, securable: Securable) -> set[Grant]:
    path = (
        "/api/2.1/unity-catalog/effective-permissions/"
        f"{securable.type.lower()}/{securable.full_name}"
    )
    grants: set[Grant] = set()
    page_token: str | None = None
    while True:
        query: dict[str, Any] = {"principal": principal, "max_results": 0}
        if page_token:
            query["page_token"] = page_token
        answer = client.api_client.do("GET", path, query=query)
        if not isinstance(answer, dict):
            raise GovernanceError(f"unexpected answer for the grants on {securable}")
        for assignment in answer.get("privilege_assignments") or []:
            if assignment.get("principal") != principal:
                continue
            for item in assignment.get("privileges") or []:
                source = Securable(
                    str(item.get("inherited_from_type") or securable.type).upper(),
                    str(item.get("inherited_from_name") or securable.full_name),
                )
                grants.add(Grant(source, str(item.get("privilege")).upper()))
        page_token = answer.get("next_page_token")
        if not page_token:
            return grants


def _owner(client: WorkspaceClient, securable: Securable) -> str | None:
    if securable.type == "CATALOG":
        return client.catalogs.get(securable.full_name).owner
    if securable.type == "SCHEMA":
        return client.schemas.get(securable.full_name).owner
    if securable.type == "VOLUME":
        return client.volumes.read(securable.full_name).owner
    if securable.type == "TABLE":
        return client.tables.get(securable.full_name).owner
    raise GovernanceError(f"kmflow does not audit {securable}")
