"""Schemathesis hooks for tests/api/run.sh: real credentials and keepalive-specific checks.

Loaded through SCHEMATHESIS_HOOKS. Reads:
- KEEPALIVE_API_URL: the server under test; must be on the loopback interface.
- KEEPALIVE_HEALTH_TOKEN, KEEPALIVE_METRICS_TOKEN: the tokens the server was started with.

Auth providers (each applies to some cases only, so both sides of every auth rule are seen):
- keepalive routes: every other case carries a live session cookie (200); the rest keep the
  cookie schemathesis generated, a random value or none (401);
- DELETE /api/v1/session: every other case ends a fresh real session; the others a random one;
- /health: every other case carries the real bearer token (details shown);
- /metrics: every other case carries the real metrics token (200; the others 401).

Checks (on top of schemathesis' own):
- keepalive_auth_semantics: 200 exactly when the live cookie was sent, 401 otherwise;
- health_details_need_token: `checks` present exactly when the real token was sent;
- metrics_need_token: 200 exactly with the real metrics token, 401 otherwise;
- both_sides_seen (after the run): each of those outcomes was observed at least once.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import threading
from urllib.parse import urlparse

import requests
import schemathesis

BASE_URL = os.environ["KEEPALIVE_API_URL"].rstrip("/")
HEALTH_TOKEN = os.environ["KEEPALIVE_HEALTH_TOKEN"]
METRICS_TOKEN = os.environ["KEEPALIVE_METRICS_TOKEN"]
COOKIE = "keepalive_sid"
KEEPALIVE_PATHS = ("/api/v1/keepalive", "/api/v1/keepalive/")

_host = urlparse(BASE_URL).hostname or ""
if _host != "localhost" and not ipaddress.ip_address(_host).is_loopback:
    raise RuntimeError(f"KEEPALIVE_API_URL must be a loopback address, not {BASE_URL}")

_lock = threading.Lock()
_live_ids: set[str] = set()
_seen: set[str] = set()


def _new_session() -> str:
    """A fresh real session id, created through the API itself."""
    answer = requests.post(f"{BASE_URL}/api/v1/session", timeout=5)
    answer.raise_for_status()
    return answer.cookies[COOKIE]


def _note(outcome: str) -> None:
    with _lock:
        _seen.add(outcome)


def _set_cookie(case, value: str) -> None:
    cookies = dict(case.cookies or {})
    cookies[COOKIE] = value
    case.cookies = cookies


@schemathesis.auth(refresh_interval=None, retry_on=[]).apply_to(path_regex=r"^/api/v1/keepalive/?$")
class LiveSession:
    """A live session cookie on every other keepalive case; one session for the whole run."""

    def __init__(self) -> None:
        self.turn = itertools.count()
        self.id: str | None = None

    def get(self, case, context):
        if next(self.turn) % 2:
            return None
        with _lock:
            if self.id is None:
                self.id = _new_session()
                _live_ids.add(self.id)
            return self.id

    def set(self, case, data, context):
        _set_cookie(case, data)


class _FreshSessionEveryOtherCase:
    """A fresh real session for every other case of its operation (which consumes it)."""

    def __init__(self) -> None:
        self.turn = itertools.count()

    def get(self, case, context):
        if next(self.turn) % 2:
            return None
        return _new_session()

    def set(self, case, data, context):
        _set_cookie(case, data)


@schemathesis.auth(refresh_interval=None, retry_on=[]).apply_to(path="/api/v1/session", method="DELETE")
class SessionToEnd(_FreshSessionEveryOtherCase):
    """So ending a real session is exercised."""


@schemathesis.auth(refresh_interval=None, retry_on=[]).apply_to(path="/api/v1/session/rotate", method="POST")
class SessionToRotate(_FreshSessionEveryOtherCase):
    """So rotating a real session is exercised."""


class _BearerEveryOtherCase:
    """The real bearer token on every other case of its path."""

    token = ""

    def __init__(self) -> None:
        self.turn = itertools.count()

    def get(self, case, context):
        if next(self.turn) % 2:
            return None
        return self.token

    def set(self, case, data, context):
        headers = dict(case.headers or {})
        headers["Authorization"] = f"Bearer {data}"
        case.headers = headers


@schemathesis.auth(refresh_interval=None, retry_on=[]).apply_to(path="/health")
class HealthToken(_BearerEveryOtherCase):
    token = HEALTH_TOKEN


@schemathesis.auth(refresh_interval=None, retry_on=[]).apply_to(path="/metrics")
class MetricsToken(_BearerEveryOtherCase):
    token = METRICS_TOKEN


def _bearer_is(response, token: str) -> bool:
    authorization = response.request.headers.get("Authorization") or ""
    return authorization.startswith("Bearer ") and authorization[7:].strip() == token


def _is_operation_request(response, case) -> bool:
    """Whether the request used the operation's own method (not an unsupported-method probe)."""
    return (response.request.method or "").upper() == case.operation.method.upper()


def _sent_header(response, name: str) -> str | None:
    return response.request.headers.get(name)


def _sent_cookie(response) -> str | None:
    """The value of the session cookie as the server reads it: the first well-formed pair."""
    header = _sent_header(response, "Cookie") or ""
    for pair in header.split(";"):
        key, sep, value = pair.strip().partition("=")
        if sep and key == COOKIE and value.strip('"') in _live_ids:
            return value.strip('"')
    return None


@schemathesis.check
def keepalive_auth_semantics(ctx, response, case):
    """200 exactly with the live session cookie, 401 without it."""
    if (
        case.operation.path not in KEEPALIVE_PATHS
        or not _is_operation_request(response, case)
        or response.status_code >= 500
    ):
        return None
    live = _sent_cookie(response) is not None
    expected = 200 if live else 401
    if response.status_code != expected:
        raise AssertionError(
            f"keepalive with {'a live' if live else 'no live'} session cookie answered "
            f"{response.status_code}, expected {expected}"
        )
    _note(f"keepalive {expected}")
    return None


@schemathesis.check
def health_details_need_token(ctx, response, case):
    """`/health` shows `checks` exactly to the holder of the token."""
    if (
        case.operation.path != "/health"
        or not _is_operation_request(response, case)
        or response.status_code not in (200, 503)
    ):
        return None
    authorized = _bearer_is(response, HEALTH_TOKEN)
    body = response.json()
    if authorized != ("checks" in body):
        raise AssertionError(
            f"/health {'with' if authorized else 'without'} the token "
            f"{'lacks' if authorized else 'shows'} `checks`"
        )
    _note("health with checks" if authorized else "health without checks")
    return None


@schemathesis.check
def metrics_need_token(ctx, response, case):
    """With a metrics token configured, `/metrics` answers 200 only to its holder, 401 to others."""
    if case.operation.path != "/metrics" or not _is_operation_request(response, case):
        return None
    authorized = _bearer_is(response, METRICS_TOKEN)
    expected = 200 if authorized else 401
    if response.status_code != expected:
        raise AssertionError(
            f"/metrics {'with' if authorized else 'without'} the metrics token answered "
            f"{response.status_code}, expected {expected}"
        )
    _note(f"metrics {expected}")
    return None


EXPECTED_OUTCOMES = {
    "keepalive 200",
    "keepalive 401",
    "health with checks",
    "health without checks",
    "metrics 200",
    "metrics 401",
}


@schemathesis.check
class both_sides_seen:
    """After the run: each side of each auth rule was exercised at least once."""

    def after_response(self, ctx, response, case):
        return None

    def after_run(self, ctx):
        missing = EXPECTED_OUTCOMES - _seen
        if missing:
            raise AssertionError("never observed: " + ", ".join(sorted(missing)))
