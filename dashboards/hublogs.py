"""A clinic's ledger pages: the log of each hub it witnesses (`HubLogs`), where a hub's
dashboards show the hub's own log (`LedgerView`).

The ledger page lists the hubs with the checkpoint the clinic accepted from each (the signed
note, verifiable with the hub's enrolled key) and the newest batches; a batch is keyed by
hub and seq, `/log/hubs/{hub}/batch/{seq}` and its `/proof`. What a reader gets follows the
hub's rules: an admin (who runs the clinic) every hub and batch and none of their records;
anyone else the hubs and batches of the patients they may see, counting and disclosing only
those patients' records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from urllib.parse import quote

from aiohttp import web
from markupsafe import Markup

from dashboards import jinja, pages, timefmt
from dashboards.access import Access, Rule
from dashboards.accounts import Role, User
from dashboards.context import add_route, csrf_token, current_user, deps, visible
from gateway.errors import InputError
from gateway.model import Batch
from gateway.protocols import HubBatch, HubLog, HubLogs

HUBS_SHOWN = 100  # on the ledger page; `glucohub hubs list` lists every one
BATCHES_SHOWN = 50


def batch_path(hub_id: str) -> str:
    """Where a hub's batches are served: `{path}/{seq}` and `{path}/{seq}/proof`."""
    return f"/log/hubs/{quote(hub_id, safe='')}/batch"


def _logs_of(request: web.Request) -> HubLogs:
    logs = deps(request).hub_logs
    assert logs is not None  # the routes are added only with hub logs
    return logs


def _reader_patients(request: web.Request) -> frozenset[str] | None:
    """None for the admin: every hub, none of its records (as `/ledger` on a hub)."""
    return None if current_user(request).role is Role.ADMIN else visible(request)


async def ledger_page(request: web.Request) -> web.StreamResponse:
    logs = _logs_of(request)
    patients = _reader_patients(request)
    (shown, total), batches = await asyncio.gather(
        logs.logs(patients, HUBS_SHOWN), logs.batches(patients, BATCHES_SHOWN)
    )
    user = current_user(request)
    return web.Response(
        text=render_ledger(shown, total, batches, user=user, csrf=csrf_token(request)),
        content_type="text/html",
        charset="utf-8",
    )


def render_ledger(
    logs: Sequence[HubLog], total: int, batches: Sequence[HubBatch], *, user: User, csrf: str
) -> str:
    """templates/ledger_hubs.html"""
    sizes = {log.hub_id: log.size for log in logs}
    return jinja.render(
        "ledger_hubs.html",
        {
            "title": "Ledger",
            "nav": Markup(pages.nav(user, csrf)),
            "csrf": csrf,
            "logs": logs,
            "more": total - len(logs),
            "batches": [
                (
                    hb.hub_id,
                    hb.batch,
                    sizes.get(hb.hub_id),
                    batch_path(hb.hub_id),
                    *(
                        Markup(timefmt.time_html(t, UTC))
                        for t in (hb.batch.first_time, hb.batch.last_time, hb.batch.sealed_at)
                    ),
                )
                for hb in batches
            ],
            "may_fetch": user.role is not Role.ADMIN,  # the admin receives no records
        },
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientLedger:
    """The patient page's ledger section at a clinic: the patient's batches of their hub."""

    batches: list[Batch]
    signed_size: int  # the hub's accepted checkpoint
    batch_path: str
    log_key: str


async def patient_ledger(logs: HubLogs, patient_id: str, limit: int) -> PatientLedger:
    (found, _), batches = await asyncio.gather(
        logs.logs({patient_id}, 1), logs.batches({patient_id}, limit)
    )
    hub = found[0] if found else None
    return PatientLedger(
        batches=[hb.batch for hb in batches],
        signed_size=0 if hub is None else hub.size,
        batch_path="" if hub is None else batch_path(hub.hub_id),
        log_key="" if hub is None else hub.verifier_key,
    )


def _key(request: web.Request) -> tuple[str, int]:
    text = request.match_info["seq"]
    return request.match_info["hub"], int(text)  # the route allows 1 to 18 digits only


async def _audit(request: web.Request, patients: frozenset[str], action: str) -> None:
    user = current_user(request)
    for pid in sorted(patients):
        await deps(request).accounts.record_view(user, pid, action)


async def batch_body(request: web.Request) -> web.StreamResponse:
    """A hub's batch as this user may see it (the hub's `/log/batch/{seq}`); 404 when it
    holds nothing of theirs, as for a missing batch."""
    hub, seq = _key(request)
    view = await _logs_of(request).batch_view(hub, seq, visible(request))
    if view is None:
        raise web.HTTPNotFound()
    await _audit(request, view.patients, f"batch:{hub}:{seq}")
    return web.Response(text=view.text, content_type="application/json")


async def batch_proof(request: web.Request) -> web.StreamResponse:
    """The offline inclusion proof of a hub's batch, against the checkpoint the clinic
    accepted, with the user's visible records of it."""
    hub, seq = _key(request)
    try:
        proof = await _logs_of(request).inclusion_proof_file(hub, seq, visible(request))
    except InputError:
        raise web.HTTPConflict(text="batch not yet covered by an accepted checkpoint") from None
    if proof is None:
        raise web.HTTPNotFound()
    await _audit(request, proof.patients, f"proof:{hub}:{seq}")
    name = quote(f"glucohub-{hub}-batch-{seq}-proof.json", safe="")
    return web.Response(
        text=proof.text,
        content_type="application/json",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}"},
    )


def add_routes(app: web.Application) -> None:
    """The clinic's ledger routes (instead of the hub's `/ledger` and `/log/batch/...`)."""
    user = Rule(access=Access.USER)
    add_route(app, "GET", "/ledger", ledger_page, user)
    # As on a hub: any signed-in user; what is served is filtered to the patients they may
    # see. A seq is 1 to 18 digits; any other segment is a 404 from the router.
    key = "/log/hubs/{hub}/batch/{seq:[0-9]{1,18}}"
    add_route(app, "GET", key, batch_body, user)
    add_route(app, "GET", key + "/proof", batch_proof, user)
