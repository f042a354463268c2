"""broker.web.auth, rule by rule: passwords, sessions, CSRF tokens, login throttling.

No HTTP here (tests/test_liaison_http.py drives the same rules through the
pages): the module takes the time, cookies and form fields as arguments, so
every rule is checked at exact millisecond edges. Passwords are real argon2id
hashes checked by libsodium; where a test needs to see the checks, it wraps
the real :func:`check_password` and records its calls.
"""

from __future__ import annotations

import ast
import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import broker.web
from broker.web.auth import (
    Auth,
    LoginTokens,
    Outcome,
    Sessions,
    Throttle,
    check_password,
    dummy_hash,
    hash_password,
    session_key,
)
from broker.web.limits import LIMITS, WebLimits
from broker.web.view import UserRecord
from tests.conftest import NOW_MS

T0 = NOW_MS
SMALL = WebLimits(
    session_absolute_ms=10_000,
    session_idle_ms=1_000,
    max_sessions=3,
    backoff_free_failures=2,
    backoff_base_ms=1_000,
    backoff_max_ms=4_000,
    max_client_failures=5,
    failure_window_ms=5_000,
    max_throttle_keys=6,
    max_field_chars=8,
    max_password_chars=16,
    max_cookie_chars=50,
    password_checks_at_once=1,
)
PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def users() -> dict[str, UserRecord]:
    return {
        "alice": UserRecord("alice", "liaison", hash_password(PASSWORD)),
        "bob": UserRecord("bob", "auditor", hash_password("bob's own")),
        "eve": UserRecord("eve", "agency", hash_password(PASSWORD)),  # type: ignore[arg-type]
    }


@dataclass
class Checks:
    """The real check_password, with a record of what it was asked and how many ran at once."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    running: int = 0
    most_at_once: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, password_hash: str, password: str) -> bool:
        with self.lock:
            self.calls.append((password_hash, password))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            return check_password(password_hash, password)
        finally:
            with self.lock:
                self.running -= 1


# --- passwords ------------------------------------------------------------------------

ARGON2ID_INTERACTIVE = "$argon2id$v=19$m=65536,t=2,p=1$"


def test_hashes_are_argon2id_at_the_interactive_cost_and_salted() -> None:
    a, b = hash_password(PASSWORD), hash_password(PASSWORD)
    assert a.startswith(ARGON2ID_INTERACTIVE)
    assert a != b  # a fresh salt each time
    assert check_password(a, PASSWORD)
    assert check_password(b, PASSWORD)


@pytest.mark.parametrize(
    ("stored", "offered", "ok"),
    [
        ("good", PASSWORD, True),
        ("good", PASSWORD + " ", False),
        ("good", PASSWORD.upper(), False),
        ("good", "", False),
        ("good", "\0", False),
        ("", PASSWORD, False),
        ("garbage", PASSWORD, False),
        ("truncated", PASSWORD, False),
        ("argon2i", PASSWORD, False),
        ("non-ascii", PASSWORD, False),
        ("good", "é" * 300, False),
    ],
)
def test_check_password(stored: str, offered: str, ok: bool) -> None:
    good = hash_password(PASSWORD)
    hashes = {
        "good": good,
        "": "",
        "garbage": "garbage",
        "truncated": good[:-4],
        "argon2i": good.replace("argon2id", "argon2i"),
        "non-ascii": good[:-1] + "é",
    }
    assert check_password(hashes[stored], offered) is ok


def test_the_dummy_hash_costs_what_a_real_one_costs_and_opens_to_nothing_known() -> None:
    h = dummy_hash()
    assert h is dummy_hash()  # made once per process
    assert h.startswith(ARGON2ID_INTERACTIVE)
    for guess in ("", PASSWORD, "password", h):
        assert not check_password(h, guess)


async def test_an_unknown_name_is_checked_against_the_dummy_hash(
    users: dict[str, UserRecord],
) -> None:
    checks = Checks()
    auth = Auth(SMALL, verify=checks)
    got = await auth.log_in(users, "mallory", PASSWORD, client="c", now_ms=T0)
    assert got.outcome is Outcome.WRONG
    assert checks.calls == [(dummy_hash(), PASSWORD)]
    # ...just as a known name is checked against its own hash, once.
    await auth.log_in(users, "alice", "wrong", client="c", now_ms=T0)
    assert checks.calls[1] == (users["alice"].password_hash, "wrong")
    assert len(checks.calls) == 2


@pytest.mark.parametrize(
    ("name", "password", "outcome"),
    [
        ("alice", PASSWORD, Outcome.OK),
        ("alice", "x" * 16, Outcome.WRONG),  # max_password_chars: still checked
        ("alice", "x" * 17, Outcome.BAD_INPUT),
        ("alice", "", Outcome.WRONG),
        ("", PASSWORD, Outcome.BAD_INPUT),
        ("a" * 8, PASSWORD, Outcome.WRONG),  # max_field_chars: a name that does not exist
        ("a" * 9, PASSWORD, Outcome.BAD_INPUT),
        (None, PASSWORD, Outcome.BAD_INPUT),
        ("alice", None, Outcome.BAD_INPUT),
        (b"alice", PASSWORD, Outcome.BAD_INPUT),
        ("alice", PASSWORD.encode(), Outcome.BAD_INPUT),
        ("eve", PASSWORD, Outcome.WRONG),  # right password, but not a reader's role
        ("bob", PASSWORD, Outcome.WRONG),
    ],
)
async def test_login_input_bounds_and_outcomes(
    users: dict[str, UserRecord], name: Any, password: Any, outcome: Outcome
) -> None:
    checks = Checks()
    auth = Auth(SMALL, verify=checks)
    got = await auth.log_in(users, name, password, client="c", now_ms=T0)
    assert got.outcome is outcome
    assert (got.sid is not None) is (outcome is Outcome.OK)
    if outcome is Outcome.BAD_INPUT:
        assert checks.calls == []  # nothing checked, nothing counted
        assert auth.throttle.pairs == {}
        assert auth.throttle.clients == {}
    else:
        assert len(checks.calls) == 1
    if outcome is Outcome.WRONG:
        assert set(auth.throttle.pairs) == {(name, "c")}
        assert set(auth.throttle.clients) == {"c"}


def test_outcomes_are_the_pages_status_codes() -> None:
    assert {o.name: o.value for o in Outcome} == {
        "OK": 303,
        "BAD_INPUT": 400,
        "WRONG": 401,
        "THROTTLED": 429,
    }


# --- sessions -------------------------------------------------------------------------


def _sessions(users: dict[str, UserRecord], limits: WebLimits = SMALL) -> tuple[Sessions, str]:
    sessions = Sessions(limits)
    return sessions, sessions.start(users["alice"], T0)


@pytest.mark.parametrize(
    ("label", "uses", "at", "alive"),
    [
        ("fresh", [], T0, True),
        ("idle just under the limit", [], T0 + 999, True),
        ("idle at the limit", [], T0 + 1_000, False),
        ("idle counts from the last use", [T0 + 900], T0 + 1_899, True),
        ("idle after the last use", [T0 + 900], T0 + 1_900, False),
        ("used all along, under 10 s", [T0 + 900 * i for i in range(1, 12)], T0 + 9_999, True),
        ("used all along, at 10 s", [T0 + 900 * i for i in range(1, 12)], T0 + 10_000, False),
        ("a clock that went back", [], T0 - 5_000, True),
    ],
)
def test_session_expiry_absolute_and_idle(
    users: dict[str, UserRecord], label: str, uses: list[int], at: int, alive: bool
) -> None:
    sessions, sid = _sessions(users)
    for t in uses:
        assert sessions.get(sid, users, t) is not None, (label, t)
    assert (sessions.get(sid, users, at) is not None) is alive, label
    if not alive:
        assert len(sessions) == 0  # a dead session is dropped, not kept
        assert sessions.get(sid, users, uses[-1] if uses else T0) is None


@pytest.mark.parametrize(
    ("label", "change"),
    [
        ("removed", lambda u: None),
        ("role changed", lambda u: replace(u, role="auditor")),
        ("role no longer a reader's", lambda u: replace(u, role="agency")),
        ("password changed", lambda u: replace(u, password_hash=hash_password("new one"))),
    ],
)
def test_a_changed_user_loses_the_session(
    users: dict[str, UserRecord],
    label: str,
    change: Callable[[UserRecord], UserRecord | None],
) -> None:
    sessions, sid = _sessions(users)
    now = dict(users)
    changed = change(users["alice"])
    if changed is None:
        del now["alice"]
    else:
        now["alice"] = changed
    assert sessions.get(sid, now, T0 + 1) is None, label
    assert len(sessions) == 0
    assert sessions.get(sid, users, T0 + 2) is None  # even once the change is undone


@pytest.mark.parametrize("cookie", [None, "", "x", "x" * 51, "A" * 43, "\udcff", "ixb_session=abc"])
def test_cookies_never_issued_find_no_session(users: dict[str, UserRecord], cookie: str) -> None:
    sessions, _ = _sessions(users)
    assert sessions.get(cookie, users, T0) is None
    assert len(sessions) == 1


def test_the_server_keeps_only_a_hash_of_the_session_id(users: dict[str, UserRecord]) -> None:
    sessions, sid = _sessions(users)
    assert len(sid) >= 43  # 32 random bytes
    assert sid in sessions
    stored = sessions._by_key  # what a memory dump would show
    assert list(stored) == [session_key(sid)]
    s = stored[session_key(sid)]
    assert sid not in vars(s).values()
    assert sid.encode() not in session_key(sid)


async def test_login_always_makes_a_new_session_id_no_fixation(
    users: dict[str, UserRecord],
) -> None:
    auth = Auth(SMALL)
    planted = "chosen-by-an-attacker"
    first = await auth.log_in(users, "alice", PASSWORD, client="c", now_ms=T0, replacing=planted)
    assert first.sid is not None and first.sid != planted
    assert auth.sessions.get(planted, users, T0) is None
    second = await auth.log_in(users, "alice", PASSWORD, client="c", now_ms=T0, replacing=first.sid)
    assert second.sid is not None and second.sid != first.sid
    assert auth.sessions.get(first.sid, users, T0) is None  # the replaced session ended
    assert auth.sessions.get(second.sid, users, T0) is not None
    assert len(auth.sessions) == 1


def test_at_most_max_sessions_the_oldest_login_goes_first(users: dict[str, UserRecord]) -> None:
    sessions = Sessions(SMALL)
    sids = [sessions.start(users["alice"], T0 + i) for i in range(5)]
    assert len(sessions) == SMALL.max_sessions
    assert [sessions.get(s, users, T0 + 5) is not None for s in sids] == [
        False,
        False,
        True,
        True,
        True,
    ]


def test_dead_sessions_are_swept_at_the_next_login(users: dict[str, UserRecord]) -> None:
    sessions = Sessions(SMALL)
    for i in range(3):
        sessions.start(users["alice"], T0 + i)
    fresh = sessions.start(users["bob"], T0 + 5_000)  # the three are idle by then
    assert len(sessions) == 1
    assert sessions.get(fresh, users, T0 + 5_000) is not None


def test_logout_and_close_end_sessions(users: dict[str, UserRecord]) -> None:
    auth = Auth(SMALL)
    a = auth.sessions.start(users["alice"], T0)
    b = auth.sessions.start(users["bob"], T0)
    auth.sessions.end(a)
    auth.sessions.end(None)
    auth.sessions.end("never issued")
    assert auth.sessions.get(a, users, T0) is None
    assert auth.sessions.get(b, users, T0) is not None
    auth.close()
    assert len(auth.sessions) == 0


def test_each_session_has_its_own_csrf_token(users: dict[str, UserRecord]) -> None:
    sessions = Sessions(SMALL)
    a = sessions.get(sessions.start(users["alice"], T0), users, T0)
    b = sessions.get(sessions.start(users["bob"], T0), users, T0)
    assert a is not None and b is not None
    assert a.csrf != b.csrf
    assert len(a.csrf) >= 43
    cases: list[tuple[object, bool]] = [
        (a.csrf, True),
        (b.csrf, False),
        (a.csrf[:-1], False),
        (a.csrf + "x", False),
        (a.csrf[:-1] + ("A" if a.csrf[-1] != "A" else "B"), False),
        ("", False),
        (None, False),
        (a.csrf.encode(), False),
        ("\udcff", False),
    ]
    for token, ok in cases:
        assert a.csrf_ok(token) is ok, token


# Model: what the rules say of each session, checked against Sessions over random histories.
_steps = st.lists(
    st.tuples(
        st.sampled_from(["login", "use", "logout"]), st.integers(0, 40), st.integers(0, 1_500)
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(steps=_steps)
def test_sessions_follow_the_rules_over_any_history(steps: list[tuple[str, int, int]]) -> None:
    users = {"alice": UserRecord("alice", "liaison", "$argon2id$not-checked-here")}
    sessions = Sessions(SMALL)
    model: dict[str, tuple[int, int]] = {}  # sid → (created, last seen), oldest login first
    sids: list[str] = []
    now = T0
    for op, pick, dt in steps:
        now += dt
        if op == "login":
            for sid in [s for s, (c, seen) in model.items() if not _alive(c, seen, now)]:
                del model[sid]
            while len(model) >= SMALL.max_sessions:
                del model[next(iter(model))]
            sid = sessions.start(users["alice"], now)
            model[sid] = (now, now)
            sids.append(sid)
        elif sids:
            sid = sids[pick % len(sids)]
            if op == "logout":
                sessions.end(sid)
                model.pop(sid, None)
                continue
            expected = sid in model and _alive(*model[sid], now)
            assert (sessions.get(sid, users, now) is not None) is expected
            if expected:
                model[sid] = (model[sid][0], now)
            else:
                model.pop(sid, None)
        assert len(sessions) <= SMALL.max_sessions


def _alive(created: int, seen: int, now: int) -> bool:
    return now - created < SMALL.session_absolute_ms and now - seen < SMALL.session_idle_ms


# --- the login form's CSRF token ------------------------------------------------------


def test_login_tokens_bind_the_form_to_its_pre_login_cookie() -> None:
    tokens = LoginTokens(b"k" * 32, SMALL)
    other_site = LoginTokens(b"j" * 32, SMALL)
    cookie = tokens.cookie(None)
    token = tokens.token(cookie)
    assert token == tokens.token(cookie)  # no state: the same cookie, the same token
    cases: list[tuple[str | None, object, bool]] = [
        (cookie, token, True),
        (cookie, token.upper(), False),
        (cookie, token[:-1], False),
        (cookie, other_site.token(cookie), False),  # another site's secret
        (cookie + "x", token, False),  # another browser's cookie
        (None, token, False),
        ("", tokens.token(""), False),
        (cookie, None, False),
        (cookie, token.encode(), False),
        (cookie, "\udcff", False),
    ]
    for prelogin, offered, ok in cases:
        assert tokens.check(prelogin, offered) is ok, (prelogin, offered)


@pytest.mark.parametrize(
    ("current", "kept"),
    [(None, False), ("", False), ("x" * 50, True), ("x" * 51, False), ("abc", True)],
)
def test_the_pre_login_cookie_is_kept_only_when_usable(current: str | None, kept: bool) -> None:
    tokens = LoginTokens(limits=SMALL)
    cookie = tokens.cookie(current)
    assert (cookie == current) is kept
    if not kept:
        assert len(cookie) >= 43


@settings(max_examples=100)
@given(a=st.text(min_size=1, max_size=50), b=st.text(min_size=1, max_size=50))
def test_a_token_opens_only_its_own_cookie(a: str, b: str) -> None:
    tokens = LoginTokens(b"k" * 32, SMALL)
    assert tokens.check(a, tokens.token(a))
    assert tokens.check(a, tokens.token(b)) is (a == b)


# --- throttling -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "at", "wait"),
    [
        ([], T0, 0),
        ([T0, T0 + 1], T0 + 2, 0),  # the first failures cost nothing
        ([T0, T0 + 1, T0 + 2], T0 + 2, 1_000),  # then a second,
        ([T0, T0 + 1, T0 + 2], T0 + 1_002, 0),  # ...counted from the last failure
        ([T0, T0 + 1, T0 + 2, T0 + 3], T0 + 3, 2_000),  # doubled at each failure
        ([T0 + i for i in range(5)], T0 + 4, 4_000),
        ([T0 + i for i in range(5)], T0 + 5_003, 0),  # the window forgives the pair
    ],
)
def test_backoff_per_name_and_client(failures: list[int], at: int, wait: int) -> None:
    throttle = Throttle(replace(SMALL, max_client_failures=100))
    for t in failures:
        throttle.failed("alice", "10.0.0.1", t)
    assert throttle.retry_after_ms("alice", "10.0.0.1", at) == wait


def test_backoff_is_capped() -> None:
    throttle = Throttle(replace(SMALL, max_client_failures=100, failure_window_ms=60_000))
    for i in range(20):
        throttle.failed("alice", "10.0.0.1", T0 + i)
    assert throttle.retry_after_ms("alice", "10.0.0.1", T0 + 19) == SMALL.backoff_max_ms


def test_failures_from_one_address_do_not_lock_the_name_elsewhere() -> None:
    throttle = Throttle(replace(SMALL, max_throttle_keys=100))
    for i in range(50):
        throttle.failed("alice", "10.6.6.6", T0 + i)
    assert throttle.retry_after_ms("alice", "10.6.6.6", T0 + 50) > 0  # the guesser waits
    assert throttle.retry_after_ms("alice", "10.0.0.1", T0 + 50) == 0  # the officer does not
    assert not any(name == "alice" and c != "10.6.6.6" for name, c in throttle.pairs)


def test_one_client_is_limited_over_all_names() -> None:
    throttle = Throttle(replace(SMALL, max_throttle_keys=100))
    for j in range(5):  # one failure each: no pair backs off
        throttle.failed(f"n{j}", "10.0.0.7", T0)
    assert throttle.retry_after_ms("bob", "10.0.0.7", T0 + 1) == 4_999  # until the window ends
    assert throttle.retry_after_ms("bob", "10.0.0.8", T0 + 1) == 0
    assert throttle.retry_after_ms("bob", "10.0.0.7", T0 + 5_000) == 0
    assert "10.0.0.7" not in throttle.clients  # expired entries are dropped, not kept


def test_at_most_max_throttle_keys_are_remembered() -> None:
    throttle = Throttle(SMALL)
    for i in range(100):
        throttle.failed(f"name{i}", f"client{i}", T0 + i)
        assert len(throttle.pairs) + len(throttle.clients) <= SMALL.max_throttle_keys
        assert (f"name{i}", f"client{i}") in throttle.pairs
    assert all(len(q) <= SMALL.max_client_failures for q in throttle.clients.values())


@settings(max_examples=150)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.sampled_from(["c1", "c2"]),
            st.integers(0, 3_000),
            st.booleans(),
        ),
        max_size=40,
    )
)
def test_throttle_matches_a_model(events: list[tuple[str, str, int, bool]]) -> None:
    limits = replace(SMALL, max_throttle_keys=1_000)
    throttle = Throttle(limits)
    pair_fails: dict[tuple[str, str], list[int]] = {}
    client_fails: dict[str, list[int]] = {}
    now = T0
    for name, client, dt, fail in events:
        now += dt
        window = limits.failure_window_ms
        pf = pair_fails.get((name, client), [])
        if pf and now - pf[-1] >= window:
            pf = pair_fails[(name, client)] = []
        wait = 0
        extra = len(pf) - limits.backoff_free_failures
        if extra > 0:
            delay = min(limits.backoff_base_ms * 2 ** (extra - 1), limits.backoff_max_ms)
            wait = max(0, pf[-1] + delay - now)
        recent = [t for t in client_fails.get(client, []) if t > now - window]
        if len(recent) >= limits.max_client_failures:
            oldest = recent[-limits.max_client_failures]
            wait = max(wait, oldest + window - now)
        assert throttle.retry_after_ms(name, client, now) == wait
        if fail:
            throttle.failed(name, client, now)
            pair_fails.setdefault((name, client), []).append(now)
            client_fails.setdefault(client, []).append(now)


# --- logging in, end to end -----------------------------------------------------------


async def test_a_throttled_login_is_refused_before_its_password_is_checked(
    users: dict[str, UserRecord],
) -> None:
    checks = Checks()
    auth = Auth(SMALL, verify=checks)
    for i in range(3):
        got = await auth.log_in(users, "alice", f"guess {i}", client="c1", now_ms=T0 + i)
        assert got.outcome is Outcome.WRONG
    assert len(checks.calls) == 3
    right = await auth.log_in(users, "alice", PASSWORD, client="c1", now_ms=T0 + 10)
    assert right.outcome is Outcome.THROTTLED  # backing off: the right password does not help
    assert right.retry_after_ms == 1_000 - 8
    assert len(checks.calls) == 3  # it was not checked
    elsewhere = await auth.log_in(users, "alice", PASSWORD, client="c2", now_ms=T0 + 10)
    assert elsewhere.outcome is Outcome.OK  # the officer, from another address
    later = await auth.log_in(users, "alice", PASSWORD, client="c1", now_ms=T0 + 1_002)
    assert later.outcome is Outcome.OK


async def test_success_forgives_the_pair_but_not_the_client(users: dict[str, UserRecord]) -> None:
    auth = Auth(SMALL)
    for i in range(2):
        await auth.log_in(users, "alice", "wrong", client="c", now_ms=T0 + i)
    assert (await auth.log_in(users, "alice", PASSWORD, client="c", now_ms=T0 + 2)).sid
    assert ("alice", "c") not in auth.throttle.pairs
    assert len(auth.throttle.clients["c"]) == 2


async def test_password_checks_run_a_few_at_a_time(users: dict[str, UserRecord]) -> None:
    checks = Checks()
    auth = Auth(SMALL, verify=checks)  # password_checks_at_once=1
    results = await asyncio.gather(
        *(auth.log_in(users, "alice", PASSWORD, client=f"c{i}", now_ms=T0) for i in range(4))
    )
    assert [r.outcome for r in results] == [Outcome.OK] * 4
    assert checks.most_at_once == 1


def test_the_default_limits_are_the_documented_ones() -> None:
    assert LIMITS.session_absolute_ms == 8 * 3600_000
    assert LIMITS.session_idle_ms == 30 * 60_000
    assert (LIMITS.backoff_free_failures, LIMITS.backoff_base_ms) == (2, 1_000)
    assert (LIMITS.backoff_max_ms, LIMITS.failure_window_ms) == (5 * 60_000, 15 * 60_000)
    assert LIMITS.max_client_failures == 30
    assert LIMITS.max_password_chars == 1024


# --- boundaries of the package --------------------------------------------------------

WEB = Path(broker.web.__file__).parent


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _calls(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            fn = node.func
            out.add(fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", ""))
    return out


def test_auth_and_view_know_nothing_of_http_or_the_clock() -> None:
    for name in ("auth.py", "view.py", "limits.py"):
        imported = {m.split(".")[0] for m in _imported(WEB / name)}
        assert not imported & {"aiohttp", "aiohttp_jinja2", "jinja2", "time", "datetime"}, name
        assert not _calls(WEB / name) & {"now", "utcnow", "time", "time_ns", "monotonic"}, name


def test_the_web_package_does_not_import_the_hub() -> None:
    sources = sorted(WEB.glob("*.py"))
    assert len(sources) >= 8
    for path in sources:
        assert not {m for m in _imported(path) if m.startswith("broker.hub")}, path.name


def test_no_file_of_the_web_package_is_long() -> None:
    for path in [*WEB.glob("*.py"), *WEB.glob("templates/*.html")]:
        assert len(path.read_text().splitlines()) <= 500, path.name
