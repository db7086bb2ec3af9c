"""API tokens: who is asking, in which role, over which region subtree.

The tokens file holds only SHA-256 hashes of the tokens, so reading it (or a backup of it)
gives nobody access; `ews api token` makes a token and prints the line to add. Each token
has a `name`, the identity written in the audit log for everything done with it, a `role`
and a `region` (a 6/9/12-digit code: that subtree, or "*": every region). The file is
re-read when it changes, so a token is revoked by deleting its entry; a file with errors is
refused with file, line and reason, and the tokens in force stay.

Reading is allowed where the token's region and the item's region overlap (a district-wide
warning is shown to a street's duty desk); acting needs the item inside the token's region
(a street's duty officer acknowledges only inside that street).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ews import metrics
from ews.api.errors import ApiError
from ews.regions import RegionRegistry
from ews.yamlfile import ConfigError, Problem, load_yaml, validate_doc

log = logging.getLogger(__name__)

Role = Literal["viewer", "duty_officer", "admin"]
Action = Literal["read", "acknowledge", "silence", "audit_export", "rules_reload"]
ROLES: tuple[Role, ...] = ("viewer", "duty_officer", "admin")
# which roles may do what; the region check comes on top
ALLOWED: dict[Action, frozenset[Role]] = {
    "read": frozenset(ROLES),
    "acknowledge": frozenset({"duty_officer", "admin"}),
    "silence": frozenset({"duty_officer", "admin"}),
    "audit_export": frozenset({"duty_officer", "admin"}),
    "rules_reload": frozenset({"admin"}),
}
ALL_REGIONS = "*"
BEIJING = timezone(timedelta(hours=8))
_CODE_RE = re.compile(r"^\d{6}(\d{3}(\d{3})?)?$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh token: 256 random bits, URL-safe, with a prefix that secret scanners can match."""
    return "ews_" + secrets.token_urlsafe(32)


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=120, description="identity written in the audit log")
    role: Role
    region: str = Field(description="6, 9 or 12 digit region code (that subtree), or '*' for all")
    sha256: str = Field(description="hex SHA-256 of the token")
    expires: datetime | None = None  # a time without zone is Beijing time

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if v != ALL_REGIONS and not _CODE_RE.fullmatch(v):
            raise ValueError("region is a 6, 9 or 12 digit code, or '*' for every region")
        return v

    @field_validator("sha256")
    @classmethod
    def _hash(cls, v: str) -> str:
        v = v.strip().lower()
        if not _HEX_RE.fullmatch(v):
            raise ValueError("sha256 is 64 hex digits (the hash of the token, never the token)")
        return v

    @model_validator(mode="after")
    def _zone(self) -> TokenIn:
        if self.expires is not None and self.expires.tzinfo is None:
            self.expires = self.expires.replace(tzinfo=BEIJING)
        return self


class TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[TokenIn]


@dataclass(frozen=True)
class Principal:
    """The caller behind a valid token."""

    name: str
    role: Role
    region: str  # code or ALL_REGIONS

    def may(self, action: Action) -> bool:
        return self.role in ALLOWED[action]

    def covers(self, code: str | None, regions: RegionRegistry | None = None) -> bool:
        """Acting on `code` (None: every region) is inside this token's subtree."""
        if self.region == ALL_REGIONS:
            return True
        if code is None:
            # "everywhere" is inside a district token only when the registry is that district
            return regions is not None and all(
                n.code.startswith(self.region) for n in regions.nodes.values() if n.tier == "district")
        return code.startswith(self.region)

    def sees(self, code: str | None, regions: RegionRegistry | None = None) -> bool:
        """`code`'s subtree and this token's overlap (either lies inside the other); an item
        of no region (None) is seen by tokens that cover every region."""
        if code is None or self.region == ALL_REGIONS:
            return self.covers(code, regions)
        return code.startswith(self.region) or self.region.startswith(code)

    def json(self) -> dict[str, str]:
        return {"name": self.name, "role": self.role, "region": self.region}


def load_tokens(path: str | Path, regions: RegionRegistry | None = None) -> dict[str, TokenIn]:
    """The tokens file as {hash: token}; ConfigError with file and line on any problem."""
    doc = load_yaml(path)
    if doc.data is None:
        raise ConfigError([Problem(doc.file, None, "", "file is empty; it needs a `tokens:` list")])
    model = validate_doc(TokensFile, doc)
    problems: list[Problem] = []
    by_hash: dict[str, TokenIn] = {}
    names: set[str] = set()
    for i, t in enumerate(model.tokens):
        def bad(field: str, reason: str, i: int = i) -> None:
            problems.append(Problem(doc.file, doc.line_of(("tokens", i, field)), f"tokens[{i}].{field}", reason))

        if t.sha256 in by_hash:
            bad("sha256", f"the same token hash is listed for {by_hash[t.sha256].name!r}")
        if t.name in names:
            bad("name", f"name {t.name!r} appears twice; the audit log could not tell them apart")
        if regions is not None and t.region != ALL_REGIONS and t.region not in regions:
            bad("region", f"region {t.region} is not in the region registry")
        by_hash[t.sha256] = t
        names.add(t.name)
    if problems:
        raise ConfigError(problems)
    return by_hash


class TokenStore:
    """The tokens in force, re-read at most every `check_s` when the file changed."""

    def __init__(self, path: str | Path, regions: RegionRegistry | None = None, check_s: float = 1.0):
        self.path = Path(path)
        self.regions = regions
        self.check_s = check_s
        self._lock = threading.Lock()
        self._tokens = load_tokens(self.path, regions)  # a bad file at start-up stops the start
        self._mtime = self._stat()
        self._checked = time.monotonic()
        self.last_error: str | None = None

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime_ns / 1e9
        except OSError:
            return None

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.check_s:
            return
        self._checked = now
        mtime = self._stat()
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            self._tokens = load_tokens(self.path, self.regions)
            self.last_error = None
            log.info("tokens file %s re-read: %d tokens", self.path, len(self._tokens))
        except ConfigError as exc:
            # keep the tokens in force: a typo must not lock the duty room out
            self.last_error = str(exc)
            log.error("tokens file not re-read, the previous tokens stay in force:\n%s", exc)

    def principal(self, authorization: str | None, now: datetime | None = None) -> Principal:
        """The caller of an `Authorization: Bearer ...` header, or ApiError 401."""
        challenge = {"WWW-Authenticate": 'Bearer realm="ews"'}
        if not authorization:
            metrics.API_DENIED.labels("token_missing").inc()
            raise ApiError(401, "token_missing", "this request needs an API token: send the header "
                           "'Authorization: Bearer <token>'", headers=challenge)
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            metrics.API_DENIED.labels("token_malformed").inc()
            raise ApiError(401, "token_malformed", "the Authorization header must read 'Bearer <token>'",
                           headers=challenge)
        with self._lock:
            self._refresh()
            entry = self._tokens.get(token_hash(token))
        if entry is None:
            metrics.API_DENIED.labels("token_unknown").inc()
            raise ApiError(401, "token_unknown", "the token is not in the tokens file (mistyped, or revoked)",
                           headers={"WWW-Authenticate": 'Bearer realm="ews", error="invalid_token"'})
        at = now or datetime.now(BEIJING)
        if entry.expires is not None and at >= entry.expires:
            metrics.API_DENIED.labels("token_expired").inc()
            raise ApiError(401, "token_expired", f"the token of {entry.name!r} expired at "
                           f"{entry.expires.isoformat()}", headers={
                               "WWW-Authenticate": 'Bearer realm="ews", error="invalid_token"'})
        return Principal(entry.name, entry.role, entry.region)


def forbid_role(p: Principal, action: Action) -> ApiError:
    metrics.API_DENIED.labels("role").inc()
    need = " or ".join(sorted(ALLOWED[action]))
    return ApiError(403, "role_forbidden", f"role {p.role} may not {action.replace('_', ' ')}; "
                    f"it needs {need}", role=p.role, action=action)


def forbid_region(p: Principal, action: Action, code: str | None) -> ApiError:
    metrics.API_DENIED.labels("region").inc()
    where = f"region {code}" if code is not None else "every region"
    return ApiError(403, "region_forbidden", f"{where} lies outside this token's region {p.region}",
                    region=code, token_region=p.region, action=action)


def require(p: Principal, action: Action, code: str | None = None, regions: RegionRegistry | None = None,
            *, acting: bool = True) -> None:
    """Raise 403 unless `p` may do `action` on `code` (acting: inside; reading: overlapping)."""
    if not p.may(action):
        raise forbid_role(p, action)
    ok = p.covers(code, regions) if acting else p.sees(code, regions)
    if not ok:
        raise forbid_region(p, action, code)


def token_entry(name: str, role: Role, region: str, expires: str | None = None) -> tuple[str, str]:
    """A new token and the YAML entry (hash only) to append under `tokens:`."""
    TokenIn.model_validate({"name": name, "role": role, "region": region, "sha256": "0" * 64,
                            "expires": expires})  # the same checks the file gets
    token = new_token()
    entry = (f"  - name: {json.dumps(name, ensure_ascii=False)}\n    role: {role}\n    region: '{region}'\n"
             f"    sha256: {token_hash(token)}\n")
    if expires:
        entry += f"    expires: {expires}\n"
    return token, entry
