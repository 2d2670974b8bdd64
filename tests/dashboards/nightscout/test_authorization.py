"""Nightscout access tokens with roles and API v2's JWTs on the real hub, as Nightscout does
them (nightscout/cgm-remote-monitor lib/authorization/index.js, endpoints.js, storage.js,
lib/server/enclave.js): `GET /api/v2/authorization/request/<accessToken>` answers
{token, sub, permissionGroups, iat, exp} with an HS256 JWT good for 8 hours, accepted as
`Authorization: Bearer`; the access token itself is accepted as `?token=`. AndroidAPS'
NSClientV3 (NSAndroidClientImpl, `requestToken`) and followers such as Nightguard do this.
Tokens are made with `glucohub nightscout token` and belong to one patient.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from glucohub.cli import main as cli
from tests.dashboards.nightscout import test_api
from tests.dashboards.nightscout.test_api import UNAUTHORIZED, Hub, sha1

hub = test_api.hub  # the real hub with p1's, p1's read-only and p2's secrets (a fixture)


def run_cli(data_dir: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli(["nightscout", *args, "--data-dir", str(data_dir)])
    return code, out.getvalue(), err.getvalue()


def make_token(hub: Hub, patient: str, name: str, *roles: str) -> str:
    flags = [arg for role in roles for arg in ("--role", role)]
    code, out, err = run_cli(hub.data_dir, "token", "--patient", patient, "--name", name, *flags)
    assert code == 0, err
    return out.removeprefix("token: ").strip()


def status_doc(device: str) -> dict[str, Any]:
    return {"device": device, "uploaderBattery": 50}


async def call(
    http: aiohttp.ClientSession,
    hub: Hub,
    method: str,
    path: str,
    *,
    bearer: str | None = None,
    body: object = None,
    **params: str,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with http.request(
        method, f"{hub.url}{path}", headers=headers, params=params, json=body
    ) as response:
        return response.status, await response.json()


async def test_a_readable_tokens_jwt_reads_its_patient_only_and_cannot_write(hub: Hub) -> None:
    readable = make_token(hub, "p1", "Mum's watch", "readable")
    assert readable.startswith("mumswatch-")  # Nightscout's shape: abbreviated subject, "-"
    other = make_token(hub, "p2", "Ben's phone", "readable")
    async with aiohttp.ClientSession() as http:
        status, _ = await call(
            http,
            hub,
            "POST",
            "/api/v1/devicestatus",
            body=[status_doc("openaps://p1-phone")],
            secret=sha1(hub.secrets["p1"]),  # ?secret=: the SHA-1 hex, as the header
        )
        assert status == 200
        before = int(datetime.now(UTC).timestamp())
        status, granted = await call(http, hub, "GET", f"/api/v2/authorization/request/{readable}")
        assert status == 200
        assert (granted["sub"], granted["permissionGroups"]) == ("Mum's watch", [["*:*:read"]])
        assert granted["exp"] - granted["iat"] == 8 * 3600 and granted["iat"] >= before
        jwt = granted["token"]
        status, seen = await call(http, hub, "GET", "/api/v1/devicestatus", bearer=jwt)
        assert status == 200 and [d["device"] for d in seen] == ["openaps://p1-phone"]
        # the access token itself as ?token= (Nightguard, xDrip+ followers)
        status, seen = await call(http, hub, "GET", "/api/v1/devicestatus", token=readable)
        assert [d["device"] for d in seen] == ["openaps://p1-phone"]
        # the JWT as ?token= too, and the token's SHA-1 as api-secret (lib/authorization)
        status, seen = await call(http, hub, "GET", "/api/v1/devicestatus", token=jwt)
        assert [d["device"] for d in seen] == ["openaps://p1-phone"]
        status, seen = await call(http, hub, "GET", "/api/v1/devicestatus", secret=sha1(readable))
        assert [d["device"] for d in seen] == ["openaps://p1-phone"]
        status, auth = await call(http, hub, "GET", "/api/v1/verifyauth", bearer=jwt)
        assert auth["message"]["canRead"] is True and auth["message"]["canWrite"] is False
        # read-only: no uploads, no deletions (Nightscout v1: 401 Unauthorized)
        for method, path, body in (
            ("POST", "/api/v1/devicestatus", [status_doc("x")]),
            ("POST", "/api/v1/entries", []),
            ("DELETE", "/api/v1/treatments/*", None),
        ):
            answer = await call(http, hub, method, path, bearer=jwt, body=body)
            assert answer == (401, UNAUTHORIZED), (method, path)
        # p2's token, its JWT or ?token=, sees nothing of p1
        status, granted2 = await call(http, hub, "GET", f"/api/v2/authorization/request/{other}")
        for kwargs in ({"bearer": granted2["token"]}, {"token": other}):
            status, seen = await call(http, hub, "GET", "/api/v1/devicestatus", **kwargs)
            assert status == 200 and seen == []
            status, entries = await call(http, hub, "GET", "/api/v1/entries.json", **kwargs)
            assert status == 200 and entries == []


async def test_a_careportal_tokens_jwt_uploads_and_revoking_the_token_ends_its_jwts(
    hub: Hub,
) -> None:
    token = make_token(hub, "p1", "AAPS", "careportal", "readable")
    async with aiohttp.ClientSession() as http:
        status, granted = await call(http, hub, "GET", f"/api/v2/authorization/request/{token}")
        assert granted["permissionGroups"] == [["api:treatments:create"], ["*:*:read"]]
        jwt = granted["token"]
        status, echo = await call(
            http, hub, "POST", "/api/v1/devicestatus", bearer=jwt, body=[status_doc("aaps")]
        )
        assert status == 200 and echo[0]["device"] == "aaps"
        treatment = {"eventType": "Note", "notes": "from a token", "created_at": _now_iso()}
        status, stored = await call(
            http, hub, "POST", "/api/v1/treatments", bearer=jwt, body=[treatment]
        )
        assert status == 200 and stored[0]["notes"] == "from a token"

        # a JWT still valid is traded for a fresh one (lib/authorization/index.js, authorize)
        status, renewed = await call(http, hub, "GET", f"/api/v2/authorization/request/{jwt}")
        assert status == 200 and renewed["sub"] == "AAPS" and renewed["exp"] >= granted["exp"]
        code, out, _ = run_cli(hub.data_dir, "list", "--patient", "p1")
        rows = [line.split("\t") for line in out.splitlines()]
        assert code == 0 and len(rows) == 3  # p1's two secrets and this token
        mine = [r for r in rows if r[4] == "AAPS"]
        assert mine[0][1:4] == ["p1", "token careportal,readable", "read-write"]
        code, _, _ = run_cli(hub.data_dir, "revoke", mine[0][0])
        assert code == 0
        answer = await call(http, hub, "GET", "/api/v1/devicestatus", bearer=jwt)
        assert answer == (401, UNAUTHORIZED)
        answer = await call(http, hub, "GET", f"/api/v2/authorization/request/{token}")
        assert answer == (401, UNAUTHORIZED)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(claims: dict[str, object], key: bytes, alg: str = "HS256") -> str:
    head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    mac = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{'' if alg == 'none' else _b64(mac)}"


async def test_forged_expired_and_unknown_credentials_are_refused(hub: Hub) -> None:
    token = make_token(hub, "p1", "watch", "readable")
    async with aiohttp.ClientSession() as http:
        _, granted = await call(http, hub, "GET", f"/api/v2/authorization/request/{token}")
        head, body, mac = granted["token"].split(".")
        claims = json.loads(base64.urlsafe_b64decode(body + "=="))
        # the same claims with the token id changed, the old signature kept
        other_id = _b64(json.dumps({**claims, "tid": claims["tid"] + 1}).encode())
        future = int(datetime.now(UTC).timestamp()) + 3600
        for jwt in (
            f"{head}.{other_id}.{mac}",
            _forged({**claims, "exp": future}, b"a guessed key"),
            _forged({**claims, "exp": future}, b"", alg="none"),
            _forged({**claims, "exp": 1_000_000_000}, b"whatever"),
            "a.b.c",
        ):
            answer = await call(http, hub, "GET", "/api/v1/devicestatus", bearer=jwt)
            assert answer == (401, UNAUTHORIZED), jwt
        answer = await call(http, hub, "GET", "/api/v2/authorization/request/nobody-0123")
        assert answer == (401, UNAUTHORIZED)
        # an uploader secret is the patient's API_SECRET, not an access token: no JWT for it
        answer = await call(http, hub, "GET", f"/api/v2/authorization/request/{hub.secrets['p1']}")
        assert answer == (401, UNAUTHORIZED)


def test_token_cli_refuses_unknown_roles_and_patients_in_one_line(tmp_path: Path) -> None:
    from gateway.model import Patient
    from gateway.store import Store

    store = Store(tmp_path)
    store.add_patient(Patient(patient_id="p1", display_name="Ann"))
    store.close()
    code, _, err = run_cli(tmp_path, "token", "--patient", "p1", "--name", "x", "--role", "god")
    assert code == 2 and "invalid choice: 'god'" in err
    code, out, err = run_cli(tmp_path, "token", "--patient", "p9", "--name", "x")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "p9" in err
    assert "Traceback" not in err
