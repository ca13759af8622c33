"""Schemathesis hooks for tests/api/run.sh: real credentials and keepalive-specific checks.

Loaded through SCHEMATHESIS_HOOKS. Reads:
- KEEPALIVE_API_URL: the server under test; must be on the loopback interface.
- KEEPALIVE_HEALTH_TOKEN, KEEPALIVE_METRICS_TOKEN, KEEPALIVE_BACKEND_TOKEN: the tokens the
  server was started with.

Auth providers (each applies to some cases only, so both sides of every auth rule are seen):
- keepalive routes: every other case carries a live session cookie (200); the rest keep the
  cookie schemathesis generated, a random value or none (401);
- DELETE /api/v1/session: every other case ends a fresh real session; the others a random one;
- /api/v1/auth (every method) and GET /api/v1/session: a third of the cases carry the cookie of
  a live session created for a user through the backend API, a third the cookie of a live
  anonymous session, a third the generated cookie or none;
- /health: every other case carries the real bearer token (details shown);
- /metrics: every other case carries the real metrics token (200; the others 401);
- /api/v1/backend/: in turn, per operation: the real backend token with real path values; no
  token; the real token with the generated path values; a wrong token with real path values.
  A real `{token}` is a fresh live session created through the backend API (so 200 and 204
  are reached, not only 404); a real `{user}` is a user given a fresh session just before.

Checks (on top of schemathesis' own):
- keepalive_auth_semantics: 200 exactly when the live cookie was sent, 401 otherwise;
- forward_auth_semantics: /api/v1/auth answers 200 with the user in X-Keepalive-User exactly
  for the live user session's cookie, 401 otherwise (`anonymous_session` for the anonymous
  session's cookie);
- session_read_semantics: GET /api/v1/session answers 200 exactly for a live cookie, with the
  session's user (`null` for the anonymous one), 401 otherwise;
- cross_site_requests_refused: the state-changing browser routes answer 403 to
  `Sec-Fetch-Site: cross-site` or `same-site` (no `cors_origins` here), and never to
  `same-origin`, `none` or a request without `Sec-Fetch-Site` and `Origin`;
- backend_needs_token: the backend routes answer 401 exactly without the real backend token;
- backend_issued_sessions_agree: `token`, `session.token` and the `cookie` of a created or
  rotated session name the same new session;
- health_details_need_token: `checks` present exactly when the real token was sent;
- metrics_need_token: 200 exactly with the real metrics token, 401 otherwise;
- both_sides_seen (after the run): each of those outcomes was observed at least once.
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import os
import secrets
import threading
from urllib.parse import urlparse

import requests
import schemathesis

BASE_URL = os.environ["KEEPALIVE_API_URL"].rstrip("/")
HEALTH_TOKEN = os.environ["KEEPALIVE_HEALTH_TOKEN"]
METRICS_TOKEN = os.environ["KEEPALIVE_METRICS_TOKEN"]
BACKEND_TOKEN = os.environ["KEEPALIVE_BACKEND_TOKEN"]
COOKIE = "keepalive_sid"
KEEPALIVE_PATHS = ("/api/v1/keepalive", "/api/v1/keepalive/")
STATE_CHANGING = {
    ("POST", "/api/v1/session"),
    ("DELETE", "/api/v1/session"),
    ("POST", "/api/v1/session/rotate"),
}
BACKEND_PREFIX = "/api/v1/backend/"
# Users of this run's real sessions, unlike any user id schemathesis generates: one whose
# session the forward-auth and session-read cases carry, one the `{token}` cases own, and one
# the `{user}` cases list and log out everywhere (so they never end the others' sessions).
_RUN = secrets.token_hex(4)
SIGNED_IN_USER = f"api-signed-in-{_RUN}"
TOKEN_USER = f"api-tokens-{_RUN}"
LISTED_USER = f"api-listed-{_RUN}"

_host = urlparse(BASE_URL).hostname or ""
if _host != "localhost" and not ipaddress.ip_address(_host).is_loopback:
    raise RuntimeError(f"KEEPALIVE_API_URL must be a loopback address, not {BASE_URL}")

_lock = threading.Lock()
_live_ids: set[str] = set()
_user_ids: dict[str, str] = {}  # live session id -> its user
_backend_tokens: set[str] = set()  # fresh real sessions handed to `{token}` cases
_seen: set[str] = set()


def _new_session() -> str:
    """A fresh real anonymous session id, created through the browser API."""
    answer = requests.post(f"{BASE_URL}/api/v1/session", timeout=5)
    answer.raise_for_status()
    return answer.cookies[COOKIE]


def _new_user_session(user: str, data: dict | None = None) -> str:
    """A fresh real session for `user`, created through the backend API; its token."""
    body: dict = {"user": user}
    if data is not None:
        body["data"] = data
    answer = requests.post(
        f"{BASE_URL}/api/v1/backend/sessions",
        json=body,
        headers={"Authorization": f"Bearer {BACKEND_TOKEN}"},
        timeout=5,
    )
    answer.raise_for_status()
    return answer.json()["token"]


def _note(outcome: str) -> None:
    with _lock:
        _seen.add(outcome)


def _set_cookie(case, value: str) -> None:
    cookies = dict(case.cookies or {})
    cookies[COOKIE] = value
    case.cookies = cookies


def _set_bearer(case, token: str | None) -> None:
    """`Authorization: Bearer <token>`, or no Authorization header at all for `None`."""
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    case.headers = headers


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


@schemathesis.auth(refresh_interval=None, retry_on=[]).apply_to(path="/api/v1/auth").apply_to(
    path="/api/v1/session", method="GET"
)
class SignedInOrAnonymous:
    """In turn, per operation: a live user session's cookie, the generated one, a live anonymous
    session's cookie. One session of each kind for the whole run: neither check ends one."""

    def __init__(self) -> None:
        self.turns: dict[str, itertools.count] = collections.defaultdict(itertools.count)
        self.signed_in: str | None = None
        self.anonymous: str | None = None

    def get(self, case, context):
        turn = next(self.turns[case.operation.label]) % 3
        if turn == 1:
            return None
        with _lock:
            if turn == 0:
                if self.signed_in is None:
                    self.signed_in = _new_user_session(SIGNED_IN_USER, {"role": "api-test"})
                    _live_ids.add(self.signed_in)
                    _user_ids[self.signed_in] = SIGNED_IN_USER
                return self.signed_in
            if self.anonymous is None:
                self.anonymous = _new_session()
                _live_ids.add(self.anonymous)
            return self.anonymous

    def set(self, case, data, context):
        _set_cookie(case, data)


@schemathesis.auth(refresh_interval=None, retry_on=[]).apply_to(path_regex=r"^/api/v1/backend/")
class BackendToken:
    """In turn, per operation: the real token and real path values; no token; the real token
    and the generated path values; a wrong token and real path values."""

    def __init__(self) -> None:
        self.turns: dict[str, itertools.count] = collections.defaultdict(itertools.count)

    def get(self, case, context):
        turn = next(self.turns[case.operation.label]) % 4
        bearer = {0: BACKEND_TOKEN, 1: None, 2: BACKEND_TOKEN, 3: "wrong-" + BACKEND_TOKEN}[turn]
        path = dict(case.path_parameters or {})
        if turn in (0, 3):
            if "token" in path:
                path["token"] = _new_user_session(TOKEN_USER, {"n": turn})
                with _lock:
                    _backend_tokens.add(path["token"])
            if "user" in path:
                _new_user_session(LISTED_USER)
                path["user"] = LISTED_USER
        return {"bearer": bearer, "path": path}

    def set(self, case, data, context):
        _set_bearer(case, data["bearer"])
        if data["path"]:
            case.path_parameters = data["path"]


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


def _sent_bearer(response) -> str | None:
    authorization = response.request.headers.get("Authorization") or ""
    if not authorization.startswith("Bearer "):
        return None
    return authorization[7:].strip()


def _bearer_is(response, token: str) -> bool:
    return _sent_bearer(response) == token


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


def _sent_path_value(response, case, name: str) -> str | None:
    """The path parameter `name` as sent (after the auth provider), if the case has it."""
    return (case.path_parameters or {}).get(name)


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """Sends a `%` in a `{user}` as `%25`, as the API asks of clients. schemathesis leaves a
    `%` followed by two hex digits as it is (it takes it for an escape already made), so a
    generated user `%C2%BB` would reach the server as `»`, another user."""
    user = (case.path_parameters or {}).get("user")
    if isinstance(user, str) and "%" in user:
        case.path_parameters = {**case.path_parameters, "user": user.replace("%", "%25")}


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
def forward_auth_semantics(ctx, response, case):
    """/api/v1/auth: 200 and the user exactly for a live user session, 401 otherwise."""
    if (
        case.operation.path != "/api/v1/auth"
        or not _is_operation_request(response, case)
        or response.status_code >= 500
    ):
        return None
    sid = _sent_cookie(response)
    user = _user_ids.get(sid) if sid is not None else None
    if user is not None:
        if response.status_code != 200:
            raise AssertionError(f"/api/v1/auth with a live user session answered {response.status_code}, expected 200")
        # schemathesis gives response headers with lowercase names and lists of values.
        values = response.headers.get("x-keepalive-user") or []
        header = values[0] if len(values) == 1 else values or None
        if header != user:
            raise AssertionError(f"/api/v1/auth answered X-Keepalive-User {header!r}, expected {user!r}")
        _note("auth 200")
        return None
    if response.status_code != 401:
        kind = "an anonymous session" if sid is not None else "no live session"
        raise AssertionError(f"/api/v1/auth with {kind} answered {response.status_code}, expected 401")
    if "x-keepalive-user" in response.headers:
        raise AssertionError("/api/v1/auth answered 401 with an X-Keepalive-User header")
    if case.operation.method.upper() != "HEAD":
        expected = "anonymous_session" if sid is not None else "session_expired"
        error = response.json().get("error")
        if error != expected:
            raise AssertionError(f"/api/v1/auth answered 401 {error!r}, expected {expected!r}")
        _note(f"auth 401 {expected}")
    return None


@schemathesis.check
def session_read_semantics(ctx, response, case):
    """GET /api/v1/session: 200 with the session's user exactly for a live cookie, 401 otherwise."""
    if (
        case.operation.path != "/api/v1/session"
        or case.operation.method.upper() != "GET"
        or not _is_operation_request(response, case)
        or response.status_code >= 500
    ):
        return None
    sid = _sent_cookie(response)
    expected = 200 if sid is not None else 401
    if response.status_code != expected:
        raise AssertionError(
            f"GET /api/v1/session with {'a live' if sid else 'no live'} session cookie answered "
            f"{response.status_code}, expected {expected}"
        )
    if expected == 200:
        user = response.json()["session"]["user"]
        if user != _user_ids.get(sid):
            raise AssertionError(f"GET /api/v1/session shows user {user!r}, expected {_user_ids.get(sid)!r}")
        _note("session read 200 " + ("user" if user else "anonymous"))
    else:
        _note("session read 401")
    return None


@schemathesis.check
def cross_site_requests_refused(ctx, response, case):
    """403 for cross-site and same-site browser requests; never for same-origin or non-browsers."""
    if (
        (case.operation.method.upper(), case.operation.path) not in STATE_CHANGING
        or not _is_operation_request(response, case)
        or response.status_code >= 500
    ):
        return None
    site = (_sent_header(response, "Sec-Fetch-Site") or "").strip().lower() or None
    origin = _sent_header(response, "Origin")
    if site in ("cross-site", "same-site"):
        if response.status_code != 403:
            raise AssertionError(f"Sec-Fetch-Site: {site} answered {response.status_code}, expected 403")
        _note("cross-site 403")
    elif site in ("same-origin", "none") or (site is None and origin is None):
        if response.status_code == 403:
            raise AssertionError(f"a {site or 'non-browser'} request answered 403")
    return None


@schemathesis.check
def backend_needs_token(ctx, response, case):
    """The backend API answers 401 exactly to requests without the real backend token."""
    if not case.operation.path.startswith(BACKEND_PREFIX) or not _is_operation_request(response, case):
        return None
    sent = _sent_bearer(response)
    if sent == BACKEND_TOKEN:
        if response.status_code == 401:
            raise AssertionError(f"{case.operation.label} with the backend token answered 401")
        _note("backend with the token")
        token = _sent_path_value(response, case, "token")
        if token in _backend_tokens and 200 <= response.status_code < 300:
            _note("backend live session 2xx")
        if _sent_path_value(response, case, "user") == LISTED_USER and response.status_code == 200:
            body = response.json()
            if case.operation.method.upper() == "GET" and not body["sessions"]:
                raise AssertionError(f"{LISTED_USER} was just given a session, yet none is listed")
            _note("backend user with sessions")
        return None
    if response.status_code != 401:
        raise AssertionError(
            f"{case.operation.label} {'with a wrong' if sent else 'without a'} backend token "
            f"answered {response.status_code}, expected 401"
        )
    _note("backend 401 with a wrong token" if sent else "backend 401 without a token")
    return None


@schemathesis.check
def backend_issued_sessions_agree(ctx, response, case):
    """A created or rotated session: `token`, `session.token` and `cookie` name one new session."""
    if (
        not case.operation.path.startswith(BACKEND_PREFIX)
        or case.operation.method.upper() != "POST"
        or not _is_operation_request(response, case)
        or response.status_code not in (200, 201)
    ):
        return None
    body = response.json()
    token = body["token"]
    if body["session"]["token"] != token:
        raise AssertionError(f"session.token {body['session']['token']!r} differs from token {token!r}")
    if not body["cookie"].startswith(f"{COOKIE}={token};"):
        raise AssertionError(f"the cookie {body['cookie']!r} does not carry token {token!r}")
    if token == _sent_path_value(response, case, "token"):
        raise AssertionError("a rotation kept the old token")
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
    "auth 200",
    "auth 401 session_expired",
    "auth 401 anonymous_session",
    "session read 200 user",
    "session read 200 anonymous",
    "session read 401",
    "backend with the token",
    "backend 401 without a token",
    "backend 401 with a wrong token",
    "backend live session 2xx",
    "backend user with sessions",
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
