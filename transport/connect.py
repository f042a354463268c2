"""Opening a NATS connection: the same options for the hub and the agency SDK.

Every connection is named (``nats-server`` shows the name in ``connz`` and in
its log), gives each connect attempt :data:`CONNECT_TIMEOUT_S`, and once
connected reconnects every :data:`RECONNECT_WAIT_S` for ever by default: a
hub or an agency outlives restarts of its server.

With unbounded reconnects nats-py also retries the *first* connect for ever.
The hub wants that (it waits for its server, and stops when told to); a
command-line client wants an answer, so ``give_up_after`` bounds the first
connect without bounding later reconnects.

nats-py reports asynchronous errors (permission violations, slow consumers,
refused connection attempts) to an error callback whose default logs a full
traceback each time. Here a connection logs one structured line per change of
state, naming the connection, never a traceback: ``nats_disconnected``,
``nats_reconnected`` (with how many errors it did not log meanwhile), and
``nats_error`` when the kind of error changes; an outage that refuses a
reconnect every half second is three lines, not one per attempt.
:class:`StateLog` does the same for loops that retry (the hub's pull loops).

TLS: with ``ca_file`` the server's certificate is verified against that CA
bundle, and its name against the URL's host (``tls://…`` or ``nats://…``:
nats-server says when it requires TLS). A certificate that does not verify
during the *first* connect is a configuration error, raised at once as one
line (:class:`~protocols.errors.ConfigError`), never retried for ever: no
retry makes a wrong CA right. Later, a server that presents a bad certificate
is logged and retried like any other refused reconnect.

Credentials (:class:`NatsAuth`): a NATS user nkey (the server sends a nonce,
we sign it; its config holds only our public key), or a user and password
for deployments configured before nkeys. A server that refuses them during
the first connect is answered at once (:class:`~protocols.errors.IoError`,
"authorization violation"): no retry makes a wrong key right.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import structlog
from nats.aio.client import DEFAULT_INBOX_PREFIX, DEFAULT_PING_INTERVAL
from nats.aio.client import DEFAULT_MAX_OUTSTANDING_PINGS as DEFAULT_MAX_PINGS
from nats.aio.client import Client as NatsClient

from protocols.errors import ConfigError, IoError
from protocols.keys import NkeySeed

log = structlog.get_logger("ixb.nats")


class _QuietStartTls(logging.Filter):
    """Drops asyncio's "returning true from eof_received() has no effect when using ssl".

    nats-server sends its INFO in clear and nats-py then upgrades the socket to
    TLS, so asyncio's stream protocol does not know it runs over TLS and logs
    that warning each time a server closes a connection (a restart, a refused
    handshake). It says nothing about us, and a CLI's stderr must stay one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("returning true from eof_received()")


logging.getLogger("asyncio").addFilter(_QuietStartTls())

CONNECT_TIMEOUT_S = 5
"""Per attempt of the first connect (nats-py's default is 2 s)."""
RECONNECT_WAIT_S = 0.5
"""Pause between reconnect attempts to the same server."""
UNBOUNDED = -1
"""``max_reconnect_attempts`` for "never give up"."""


class StateLog:
    """Logs a failing operation once per change of state, not once per retry.

    :meth:`failed` logs ``<event>`` (warning) when the kind of error (its type)
    differs from the last one logged; repeats are counted. :meth:`ok` logs
    ``<event>_recovered`` (info, with the count), or ``recovered`` when given,
    once after a failure. ``by_kind=False``: one line per failing spell, whatever
    the errors (a failing disk answers in several ways).
    """

    def __init__(
        self,
        event: str,
        *,
        logger: structlog.typing.FilteringBoundLogger | None = None,
        recovered: str | None = None,
        by_kind: bool = True,
        **fields: object,
    ) -> None:
        self.event = event
        self.recovered = recovered if recovered is not None else f"{event}_recovered"
        self.by_kind = by_kind
        self.log = logger if logger is not None else log
        self.fields = fields
        self.kind: str | None = None
        self.repeats = 0

    def failed(self, exc: BaseException, **extra: object) -> bool:
        """Record a failure; True if it was logged (a new kind of error)."""
        kind = type(exc).__name__
        if kind == self.kind or (not self.by_kind and self.kind is not None):
            self.repeats += 1
            return False
        self.kind = kind
        self.log.warning(self.event, **self.fields, **extra, error=kind, detail=str(exc))
        return True

    def ok(self) -> None:
        """Record a success; logs the recovery once if the last call was a failure."""
        if self.kind is not None:
            self.log.info(self.recovered, **self.fields, repeats=self.repeats)
        self.kind = None
        self.repeats = 0


@dataclass(frozen=True, slots=True, repr=False)
class NatsAuth:
    """How a client logs into nats-server: an nkey, else (older configs) user and password."""

    seed: NkeySeed | None = None
    user: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if self.seed is None and (self.user is None or self.password is None):
            raise ConfigError("NATS credentials: an nkey, or a user and a password")

    @property
    def nkey(self) -> str | None:
        """The public ``U…`` key the server's config holds for us, if we use an nkey."""
        return None if self.seed is None else self.seed.public

    def connect_options(self) -> dict[str, Any]:
        """The keyword arguments of nats-py's ``Client.connect`` for these credentials."""
        if self.seed is not None:
            return {"nkeys_seed_str": self.seed.seed_str()}
        return {"user": self.user, "password": self.password}

    def __repr__(self) -> str:  # never print a secret by accident
        if self.seed is not None:
            return f"NatsAuth(nkey={self.seed.public})"
        return f"NatsAuth(user={self.user!r}, password=<hidden>)"

    __str__ = __repr__


HANDSHAKE_CLOSED_UNLOGGED = 10
"""First-connect attempts the server may close (reset, broken pipe) before one is logged.

Over TLS, nats-server's answer to a refused login (``-ERR 'Authorization
Violation'``, then close) often reaches nats-py as a broken pipe on its PING
after CONNECT; the next attempt usually reads the ``-ERR`` itself. Logging
the first ones would put a spurious line before the real, one-line answer."""


def _is_authorization_violation(exc: Exception) -> bool:
    return isinstance(exc, nats.errors.Error) and "authorization violation" in str(exc).lower()


@dataclass
class ConnectionLog:
    """The callbacks of one connection: one log line per change of state."""

    name: str
    seen: list[Exception] = field(default_factory=list)
    """The last error reported (for the first connect's message)."""
    nc: NatsClient | None = None
    first_connect: bool = True
    """While the first connect is under way, a certificate that fails to verify is fatal."""
    quiet_first_connect: bool = False
    """Log nothing while the first connect is under way: its caller reports the outcome
    (a command line prints one line, not a warning per refused attempt)."""
    quiet: bool = False
    """Log nothing at all: a command line reports a lost connection in its one line."""
    _errors: StateLog = field(init=False)
    _closed_in_handshake: int = 0

    def __post_init__(self) -> None:
        self._errors = StateLog("nats_error", connection=self.name)

    async def on_error(self, exc: Exception) -> None:
        self.seen[:] = [exc]
        if self.first_connect and isinstance(exc, ssl.SSLCertVerificationError):
            raise _CertificateRefusedError(exc)  # ends nats-py's first-connect loop
        if self.first_connect and _is_authorization_violation(exc):
            raise _AuthorizationRefusedError(str(exc))
        if self.first_connect and isinstance(exc, BrokenPipeError | ConnectionResetError):
            self._closed_in_handshake += 1
            if self._closed_in_handshake < HANDSHAKE_CLOSED_UNLOGGED:
                return  # perhaps a refused login: the next attempt reads the server's -ERR
        if self.quiet or (self.first_connect and self.quiet_first_connect):
            return
        self._errors.failed(exc)

    async def on_disconnected(self) -> None:
        if self.quiet or (self.nc is not None and self.nc.is_closed):
            return  # closed on purpose (nats-py calls this on close too)
        log.warning("nats_disconnected", connection=self.name)

    async def on_reconnected(self) -> None:
        if self.quiet:
            return
        log.info("nats_reconnected", connection=self.name, errors_not_logged=self._errors.repeats)
        self._errors = StateLog("nats_error", connection=self.name)


class _CertificateRefusedError(Exception):
    def __init__(self, cause: ssl.SSLCertVerificationError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _AuthorizationRefusedError(Exception):
    pass


def tls_context(ca_file: str | Path | None) -> ssl.SSLContext | None:
    """A client context that verifies the server against ``ca_file`` (and its name)."""
    if ca_file is None:
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"cannot load the NATS CA file {ca_file}: {detail}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_list(url: str) -> list[str]:
    """The servers of a connection URL: one, or a cluster's nodes joined by commas."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ConfigError("no NATS server URL given")
    return servers


CLUSTER_PING_INTERVAL_S = 5
CLUSTER_MAX_PINGS = 3
"""With several servers to go to, a client that hears nothing for 3 pings 5 s apart leaves
a hung node for the next (the servers of a cluster ping as often: broker.natsplan)."""


async def connect(
    url: str,
    *,
    auth: NatsAuth,
    name: str,
    ca_file: str | Path | None = None,
    inbox_prefix: str | bytes = DEFAULT_INBOX_PREFIX,
    max_reconnect_attempts: int = UNBOUNDED,
    connect_timeout: int = CONNECT_TIMEOUT_S,
    give_up_after: float | None = None,
    quiet_first_connect: bool = False,
    quiet: bool = False,
) -> NatsClient:
    """A connected client.

    Raises ``TimeoutError`` if no connect succeeded within ``give_up_after``
    seconds (``None``: keep trying while reconnects are unbounded),
    ``ConfigError`` if the server's certificate does not verify against
    ``ca_file`` (or the system's CAs), ``IoError`` if the server refuses
    ``auth``, and nats-py's errors or ``OSError`` when it gives up by itself.
    ``quiet_first_connect``: no log line for the refused attempts of the first
    connect (the caller reports its outcome, e.g. with :func:`unreachable`);
    ``quiet``: no log line at all, ever (a command line, which says what went
    wrong in the one line it prints).
    """
    tls = tls_context(ca_file)
    servers = server_list(url)
    clustered = len(servers) > 1
    nc = NatsClient()
    states = ConnectionLog(name, nc=nc, quiet_first_connect=quiet_first_connect, quiet=quiet)
    seen = states.seen
    try:
        async with asyncio.timeout(give_up_after):
            await nc.connect(
                servers,
                **auth.connect_options(),
                ping_interval=CLUSTER_PING_INTERVAL_S if clustered else DEFAULT_PING_INTERVAL,
                max_outstanding_pings=CLUSTER_MAX_PINGS if clustered else DEFAULT_MAX_PINGS,
                name=name,
                inbox_prefix=inbox_prefix,
                error_cb=states.on_error,
                disconnected_cb=states.on_disconnected,
                reconnected_cb=states.on_reconnected,
                allow_reconnect=True,
                max_reconnect_attempts=max_reconnect_attempts,
                reconnect_time_wait=RECONNECT_WAIT_S,  # type: ignore[arg-type]  # typed int
                connect_timeout=connect_timeout,
                tls=tls,
            )
    except _CertificateRefusedError as exc:
        await _abandon(nc)
        trusted = f"the CA in {ca_file}" if ca_file is not None else "the system's CAs"
        raise ConfigError(
            f"the NATS server at {url} presented a certificate that does not verify "
            f"against {trusted}: {exc.cause.verify_message or exc.cause.reason}"
        ) from None
    except _AuthorizationRefusedError:
        await _abandon(nc)
        raise IoError(
            f"cannot reach {url}: refused our credentials ({auth!r}): authorization violation"
        ) from None
    except TimeoutError:
        await _abandon(nc)
        if give_up_after is None:
            raise
        last = f"{type(seen[0]).__name__}: {seen[0]}" if seen else "no answer"
        raise ConnectTimeoutError(
            f"no NATS server at {url} within {give_up_after:g} s ({last})",
            reason=_reason(seen[0]) if seen else f"no answer within {give_up_after:g} s",
        ) from None
    except nats.errors.NoServersError:  # bounded attempts, all refused
        await _abandon(nc)
        raise ConnectTimeoutError(
            f"no NATS server at {url} after {max_reconnect_attempts} attempts",
            reason=_reason(seen[0]) if seen else "no servers available",
        ) from None
    except BaseException:  # cancelled (the hub is stopping) or refused: leave nothing running
        await _abandon(nc)
        raise
    states.first_connect = False
    return nc


class ConnectTimeoutError(TimeoutError):
    """No first connect within ``give_up_after`` (or the bounded attempts); ``reason`` says
    why in a few words: the last attempt's error ("connection refused"), or no answer."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _reason(exc: BaseException) -> str:
    """A refused attempt in the words a person reads: "connection refused", …"""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip().strip("'\"")
    return text.lower() if text else type(exc).__name__


def unreachable(url: str, exc: BaseException) -> IoError:
    """The one line a command prints when its first connect failed: ``cannot reach URL: why``."""
    if isinstance(exc, IoError):
        return exc
    reason = exc.reason if isinstance(exc, ConnectTimeoutError) else _reason(exc)
    return IoError(f"cannot reach {url}: {reason}")


ABANDON_S = 1.0
"""How long closing a connection that never completed its first connect may take: after
a failed TLS handshake nats-py's close() waits for ever for the socket's closing."""


async def _abandon(nc: NatsClient) -> None:
    # AttributeError: asyncio's TLS transport once the socket is gone (CPython 3.11)
    with contextlib.suppress(nats.errors.Error, OSError, TimeoutError, AttributeError):
        await asyncio.wait_for(nc.close(), ABANDON_S)  # the socket is closed before the wait
