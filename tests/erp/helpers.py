"""What the ERP tests share: the D365 stand-in's connection settings and its secret, and the
released operation an order source is expected to report."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from edge.relay.orders import ErpOperation
from simulators.erp.d365 import D365StandIn

D365_SECRET = "s3cret-value"


def write_secret(tmp_path: Path) -> Path:
    """A client secret file for the D365 stand-in (as the relay's configuration names one)."""
    path = tmp_path / "d365.secret"
    path.write_text(D365_SECRET + "\n", encoding="utf-8")
    return path


def d365_values(d365: D365StandIn, secret_file: Path, **changes: Any) -> dict[str, Any]:
    """The settings table of a connection to the stand-in (legal entity ``usmf``, 2 s timeout)
    with ``changes``; for ``Settings.model_validate`` of the adapter or the order source."""
    values: dict[str, Any] = {
        "system": "d365",
        "base_url": d365.base_url,
        "tenant_token_url": d365.token_url,
        "client_id": "edge-relay",
        "client_secret_file": secret_file,
        "company": "usmf",
        "timeout_s": 2.0,
    }
    values.update(changes)
    return values


def released(
    where: tuple[str, str, str],
    what: tuple[str, Decimal, str],
    text: str,
    sequence: int,
    plan: tuple[float, float, str | None],
) -> ErpOperation:
    """A released operation as a snapshot reports it: ``where`` is (work center, order,
    operation), ``what`` (material, quantity, unit), ``plan`` (setup seconds, run seconds per
    unit, latest end)."""
    setup_s, run_s, latest_end = plan
    operation = ErpOperation(*where, *what, material_text=text, sequence=sequence)
    return replace(
        operation, planned_setup_s=setup_s, planned_run_s_per_unit=run_s, latest_end=latest_end
    )


async def d365_token(client: httpx.AsyncClient, d365: D365StandIn) -> str:
    """A bearer token from the stand-in's token endpoint, for the relay's client."""
    form = {
        "grant_type": "client_credentials",
        "client_id": "edge-relay",
        "client_secret": D365_SECRET,
        "scope": f"{d365.base_url}/.default",
    }
    token: str = (await client.post(d365.token_url, data=form)).json()["access_token"]
    return token
