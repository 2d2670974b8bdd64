"""Access rules: every route is registered with an explicit `Rule`, enforced by one middleware.

`Rule.patient_from` names where a route's patient id comes from (a path segment or a query
parameter); the middleware answers 404 — the same as for a patient that does not exist —
when the viewer may not see that patient, and writes the audit record of the view.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dashboards.accounts import Role, User


class Access(StrEnum):
    PUBLIC = "public"  # no login (health checks, login page, the public transparency log)
    USER = "user"  # any logged-in user (or API token where `token_ok`)
    CLINICIAN = "clinician"
    PATIENT = "patient"  # a patient user acting on their own record (consent)
    # A Nightscout uploader secret or token, checked by the route itself (dashboards/nightscout):
    # it names one patient and never a user, so no session, cookie or user token counts.
    UPLOADER = "uploader"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    access: Access
    patient_from: str | None = None  # "match:<name>" or "query:<name>"
    audit: str | None = None  # action recorded in the patient's access log, if any
    token_ok: bool = False  # accepts `Authorization: Bearer` API tokens (no cookie, no CSRF)

    def __post_init__(self) -> None:
        if self.patient_from is not None:
            where, _, name = self.patient_from.partition(":")
            if where not in ("match", "query") or not name:
                raise ValueError(
                    f"patient_from must be match:<name> or query:<name>, got {self.patient_from!r}"
                )
            if self.access in (Access.PUBLIC, Access.UPLOADER):
                raise ValueError("only a user route takes its patient from the request")


def role_allows(rule: Rule, user: User | None) -> bool:
    """Whether `user` passes the role part of `rule` (patient scope is checked separately)."""
    if rule.access in (Access.PUBLIC, Access.UPLOADER):
        return True
    if user is None or user.disabled:
        return False
    if rule.access is Access.USER:
        return True
    if rule.access is Access.CLINICIAN:
        return user.role is Role.CLINICIAN
    return user.role is Role.PATIENT and user.patient_id is not None
