"""The agency SDK: send, read the durable inbox, ask and answer, follow receipts.

One small client per agency connection::

    async with await AgencyClient.connect(profile, identity) as client:
        msg_id = await client.send(alert, to=["MYS/RMP-ATIPSOM"], handling=HandlingCode.H2)
        async for item in client.inbox():
            ...
            await item.ack()

Everything that arrives is verified before the application sees it: sender
signature against the hub-signed directories (themselves verified against the
federation's trust anchors), hop countersignatures, freshness, replay; then
decrypted. What fails is handed over as :class:`Refused` (and removed from the
inbox), never silently dropped. Receipts are statements by their signer
(SPEC §5 receipt): one its signer may not make is refused too, and those
accepted are collected per message id as :class:`SignedReceipt`, with who
signed them.

Delivery contract:

- **Sending.** :meth:`AgencyClient.send` returns once the hub's JetStream
  stored the envelope. If it never confirmed, the outcome is unknown (it may
  have been stored, or be stored when a buffered publish goes out after a
  reconnect): :class:`~protocols.errors.UnknownOutcomeError` carries the
  message id and the sealed bytes, and :meth:`AgencyClient.resend` publishes
  the very same bytes under the same ``Nats-Msg-Id``, stored at most once
  (SPEC §8.1). Sending the content again as a new message would duplicate it.
- **Receiving.** Each message is handed to the application once: acking an
  :class:`Incoming` records it as handled (by sender and id, until it
  expires; in a file when ``handled_path`` is given, so across restarts)
  before the ack goes out, and a redelivery of a handled message (an ack lost
  in a crash) is acked and not handed over again. A message handed over and
  not yet acked is kept from redelivery (``in_progress``) while the client
  runs; :meth:`Incoming.leave` or :meth:`AgencyClient.close` gives it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from agency_client.enckeys import KeyFile, KeySchedule, KeyState
from agency_client.federation_state import adopt_federation, learn_federation
from agency_client.handled import HandledMessages
from agency_client.keystore import load_identity
from agency_client.profile import Profile
from protocols import subjects
from protocols.enckey import KeyUpdate, decode_answer, sign_update
from protocols.envelope import (
    Envelope,
    Header,
    Opened,
    VerifiedEnvelope,
    decode_envelope,
    open_envelope,
    seal_envelope,
    verify_envelope,
    verify_hops,
)
from protocols.errors import (
    ConfigError,
    DecryptError,
    DirectoryError,
    IoError,
    IxbError,
    LocalError,
    SignatureError,
    UnauthorisedError,
    UnknownOutcomeError,
    UnknownRecipientError,
    UnknownSenderError,
    UsageError,
    error_for_code,
)
from protocols.federation import (
    FEDERATION_REQUEST,
    KEY_GRACE_MS,
    FederationFile,
    TrustAnchors,
)
from protocols.fields import duration_text
from protocols.handling import HandlingCode, Priority
from protocols.identifiers import Principal, format_message_id, parse_agency
from protocols.keys import NATS_AGENCY, Identity, KeyAlg, key_id
from protocols.limits import MS_PER_DAY
from protocols.lookups import check_lookup_answer
from protocols.messages import Body, Receipt, ReceiptStatus
from protocols.receipts import (
    check_receipt_signer,
    check_receipt_statement,
    check_reminder,
    closes_request,
)
from protocols.replay import ReplayGuard
from protocols.trusted import TrustedDirectories
from protocols.victims import check_victim_handling
from transport import streams
from transport.clock import wall_ms
from transport.connect import UNBOUNDED, NatsAuth, connect, unreachable
from transport.fetch import fetch_ready, keep_in_progress
from transport.files import read_bytes
from transport.streams import INBOX_STREAM, KEEPALIVE_S

log = structlog.get_logger("ixb.agency")

DEFAULT_TTL_MS = 7 * MS_PER_DAY
FETCH_BATCH = 32
MIN_FETCH_S = 0.05
MAX_FEDERATION_BYTES = 64 * 1024
MAX_TRACKED_SEQUENCES = 100_000
MAX_RECEIPT_RECORDS = 100_000
"""Messages whose receipts the client keeps in memory (the oldest go first)."""
MAX_SENT_RECORDS = 100_000
"""Messages whose recipients the client remembers, to check the receipts about them."""
LOOKUP_TIMEOUT_S = 10.0
"""How long a lookup waits for its hub's reply by default: longer than the hubs' own waits
(a peer hub 5 s, a responder 2 s), so the requester hears the hubs' verdict, not silence."""
PUBLISH_TIMEOUT_S = 5.0
"""How long one publish waits for JetStream's acknowledgement."""
PUBLISH_ATTEMPTS = 5
"""Publishes (same ``Nats-Msg-Id``) before the outcome is reported as unknown."""
HANDLER_RETRY_S = 1.0
SERVE_READY_S = 5
"""How long :meth:`AgencyClient.serve` waits for the server to confirm its lookup subscription."""
"""Delay before a message whose handler failed in :meth:`AgencyClient.serve` comes back."""
ROTATION_CHECK_S = 5.0
"""After ``ixb keys rotate``, how often a sender looks whether the hub lists the new keys."""
DIRECTORY_REFRESH_S = 30.0
"""How old the directories a sender encrypts to may get: it then asks the hub's index
again (one small request) and fetches what changed, e.g. a recipient's rotated keys."""
KEY_CHECK_MS = 5_000
"""How often the client looks at its encryption-key schedule (``maintain_keys``)."""
KEY_RETRY_MS = 60_000
"""After the hub refused a key update (or did not answer), when to try again."""
KEY_REQUEST_S = 5.0
"""How long a key update or the inbox consumer's info may take to answer."""
FIRST_CONNECT_S = 10.0
"""How long :meth:`AgencyClient.connect` tries to reach the hub's NATS by default
(a command line passes its ``--timeout``, 5 s by default).

Once connected, the client reconnects for ever unless told a bound."""


@dataclass
class Incoming:
    """A verified, decrypted message from the inbox. Ack it once handled."""

    header: Header
    body: Body
    envelope: Envelope
    hubs: tuple[Principal, ...]
    _msg: Msg | None = field(repr=False, default=None)
    _client: AgencyClient | None = field(repr=False, default=None)
    _lookup: Msg | None = field(repr=False, default=None)
    """A lookup handed over on the serve subject (SPEC §14): :meth:`AgencyClient.reply`
    answers on its reply subject instead of the durable path."""

    @property
    def message_id(self) -> str:
        return self.header.message_id

    @property
    def sender(self) -> Principal:
        return self.header.sender_principal

    async def ack(self) -> None:
        """Handled: remembered as such (never handed over again), then removed from the inbox."""
        if self._msg is not None:
            msg, self._msg = self._msg, None
            if self._client is not None:
                self._client._handled_by_application(self)
            await msg.ack()

    async def leave(self, delay: float = 1.0) -> None:
        """Not handled: put it back in the inbox (for another reader, or a later run)."""
        if self._msg is not None:
            msg, self._msg = self._msg, None
            if self._client is not None:
                self._client._held.pop(self._key, None)
            await msg.nak(delay=delay)

    @property
    def _key(self) -> tuple[str, bytes]:
        return (self.header.sender, self.header.id)


@dataclass(frozen=True, slots=True)
class SignedReceipt:
    """A receipt that passed verification and the receipt rule, with who signed it.

    ``signer`` is the verified sender of the envelope that carried it (the
    receipt's ``by`` equals it); ``hops`` the hubs that countersigned it.
    """

    receipt: Receipt
    signer: Principal
    hops: tuple[Principal, ...]

    @property
    def status(self) -> ReceiptStatus:
        return self.receipt.status

    @property
    def ids(self) -> tuple[bytes, ...]:
        return self.receipt.ids


@dataclass
class Refused:
    """Something in the inbox that failed verification; removed from the inbox, reported here."""

    error: IxbError
    message_id: str | None


Item = Incoming | Refused


@dataclass(frozen=True, slots=True)
class Queued:
    """No answer in time: the owner's hub queued the lookup for a person (no responder
    answered), or our own hub sent it on over the durable path (the owner's hub did not
    answer; SPEC §14.4).

    The answer comes later, over the durable path, into the requester's inbox.
    """

    message_id: bytes
    """The lookup's id (the answer names it in ``in_reply_to``)."""
    owner: Principal
    """The agency whose people will answer."""
    by: Principal
    """The hub that signed the ``queued`` receipt: the owner's, or the requester's own."""
    due_ms: int
    receipt: SignedReceipt

    def describe(self, now_ms: int) -> str:
        """``queued at MYS/IMMIGRATION, due in 7 h 58 min``; queued by our own hub:
        ``queued for MYS/IMMIGRATION by THA/HUB (the hub of MYS …), due in …``."""
        due = due_phrase(self.due_ms, now_ms)
        if self.by.country == self.owner.country:
            return f"queued at {self.owner}, {due}"
        why = self.receipt.receipt.detail or ""
        reason = why.split(": ", 1)[1] if ": " in why else why
        return f"queued for {self.owner} by {self.by} ({reason}), {due}"


def due_phrase(due_ms: int, now_ms: int) -> str:
    """``due in 7 h 58 min`` (or ``overdue by …``)."""
    span = duration_text(due_ms - now_ms)
    return f"due in {span}" if due_ms >= now_ms else f"overdue by {span}"


LookupResult = Incoming | Queued


def nats_auth(profile: Profile, identity: Identity) -> NatsAuth:
    """The nkey sealed in the key file; else (older key files) the profile's password."""
    seed = identity.nats_seed(NATS_AGENCY)
    if seed is not None:
        return NatsAuth(seed=seed)
    if profile.nats.password is None:
        raise ConfigError(
            f"{identity.principal}: the key file seals no NATS nkey and the profile has no "
            "nats.password"
        )
    user = profile.nats.user or f"agency-{identity.principal.name}"
    return NatsAuth(user=user, password=profile.nats.password)


class AgencyClient:
    def __init__(
        self,
        identity: Identity,
        nc: NatsClient,
        keys: TrustedDirectories,
        clock: Callable[[], int] = wall_ms,
        handled: HandledMessages | None = None,
        *,
        previous: Identity | None = None,
        key_file: KeyFile | None = None,
        schedule: KeySchedule | None = None,
    ) -> None:
        """Prefer :meth:`connect`. The client owns ``handled`` (in memory when ``None``).

        ``previous``: the keys ``ixb keys rotate`` replaced. Until the hub's
        directory lists the new keys the client signs with these (the hub
        does not know the new ones yet), and it decrypts with both for as long
        as it holds them: nothing sent during a rotation is refused or lost.

        ``key_file`` (with its ``schedule``): the key file ``identity`` came
        from, which :meth:`maintain_keys` rotates and prunes; it also opens
        with the retired encryption keys the file still holds.
        """
        self.identity = identity
        self.principal = identity.principal
        self.held_keys: tuple[Identity, ...] = (
            (identity,)
            if previous is None
            else (
                identity,
                previous,
            )
        )
        self._newest = identity
        self.key_file = key_file
        self.key_schedule = schedule or KeySchedule(rotation_ms=0, grace_ms=0)
        self._retired: tuple[Identity, ...] = ()
        """Identities of the retired encryption keys the key file still holds (decrypt only)."""
        self._next_key_check = 0
        self.key_check_ms = KEY_CHECK_MS
        if key_file is not None:
            self._retired = key_file.state.decryption_identities()[1:]
        self._refreshed = time.monotonic()
        self.directory_refresh_s = DIRECTORY_REFRESH_S
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.keys = keys
        self.clock = clock
        self.replay = ReplayGuard()
        self._served = ReplayGuard()
        """Lookups handed over on the serve subject (see :meth:`_verify_reply`)."""
        self._stream_seq: dict[tuple[str, bytes], int] = {}
        self.receipts: dict[str, list[SignedReceipt]] = defaultdict(list)
        """What the hubs stated about each message (by id), for the last
        :data:`MAX_RECEIPT_RECORDS` messages (:func:`keep_receipt`)."""
        self._sent: dict[bytes, tuple[Principal, ...]] = {}
        self._pending: list[Item] = []
        self._psub: JetStreamContext.PullSubscription | None = None
        self._receipt_waiters: list[asyncio.Future[None]] = []
        self.handled = handled if handled is not None else HandledMessages()
        self.keep: Callable[[Incoming], None] | None = None
        """Called with each handled message before it is recorded and acked (receipts
        excepted): the CLI's message store (:mod:`agency_client.msgstore`)."""
        self.on_sent: Callable[[Header], None] | None = None
        """Called with the header of each message once the hub stored it: the CLI keeps
        the requests it sent and the answers it gave, for ``ixb overdue``."""
        self.on_receipt: Callable[[SignedReceipt], None] | None = None
        """Called with each receipt statement once verified (new ones only): the CLI keeps
        them in the local state at once, for ``ixb receipts`` and ``ixb overdue`` beside a
        long-running ``ixb agency respond``."""
        self._held: dict[tuple[str, bytes], Msg] = {}
        """Messages handed to the application (or queued for it) and not yet acked or left."""
        self._keepalive: asyncio.Task[None] | None = None
        self.federation: FederationFile | None = None
        """The federation version in use; a newer one is learned from the hub."""
        self.federation_state: Path | None = None

    # --- lifecycle ------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        profile: Profile,
        identity: Identity,
        clock: Callable[[], int] = wall_ms,
        *,
        handled_path: Path | None = None,
        previous: Identity | None = None,
        federation_state: Path | None = None,
        key_file: KeyFile | None = None,
        connect_timeout: float = FIRST_CONNECT_S,
        max_reconnect_attempts: int = UNBOUNDED,
        log_connection: bool = True,
    ) -> AgencyClient:
        """Connect to the agency's hub and fetch the directories.

        The first connect gives up after ``connect_timeout`` seconds with one
        :class:`~protocols.errors.IoError` ("cannot reach nats://…: connection
        refused", "…: authorization violation"), logging nothing meanwhile; a
        connection lost later is retried ``max_reconnect_attempts`` times
        (:data:`~transport.connect.UNBOUNDED`: for ever). ``log_connection=False``:
        no log line about the connection's state (a command line reports a lost
        connection in its one line).

        ``handled_path``: the SQLite file remembering which messages the
        application handled, so that none is handed over twice across
        restarts (see the module docstring); ``None`` remembers in memory.
        ``federation_state``: the federation version accepted before
        (:mod:`agency_client.federation_state`); the configured file must be it
        or its signed successor. ``None``: the configured file is trusted as is.
        ``key_file``: the opened key file ``identity`` is the current identity of;
        its encryption key is then rotated on the profile's schedule and retired
        keys destroyed after their grace (:meth:`maintain_keys`).
        """
        if identity.principal != profile.principal:
            raise LocalError(
                f"key file is for {identity.principal}, profile for {profile.agency.id}"
            )
        fed_path = profile.path(profile.agency.federation_file)
        try:
            fed_text = read_bytes(fed_path, MAX_FEDERATION_BYTES).decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{fed_path}: not UTF-8") from None
        federation = adopt_federation(federation_state, fed_text, fed_path)
        try:
            nc = await connect(
                profile.nats.url,
                auth=nats_auth(profile, identity),
                ca_file=profile.nats_ca_file(),
                inbox_prefix=subjects.reply_prefix(identity.principal.name),
                name=f"ixb-agency-{identity.principal}",
                max_reconnect_attempts=max_reconnect_attempts,
                connect_timeout=max(1, math.ceil(connect_timeout)),
                give_up_after=connect_timeout,
                quiet_first_connect=True,
                quiet=not log_connection,
            )
        except (nats.errors.Error, OSError) as exc:  # OSError includes TimeoutError
            raise unreachable(profile.nats.url, exc) from None
        handled = HandledMessages(handled_path)
        handled.prune(clock())
        client = cls(
            identity,
            nc,
            TrustedDirectories(federation.trust),
            clock,
            handled,
            previous=previous,
            key_file=key_file,
            schedule=None if key_file is None else KeySchedule.of(profile),
        )
        client.federation = federation
        client.federation_state = federation_state
        await client.refresh_directories()
        return client

    async def close(self) -> None:
        """Give back what the application still holds (redelivered at once), then disconnect."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        held, self._held = list(self._held.values()), {}
        self._pending = []
        for msg in held:
            if not msg.is_acked:
                with contextlib.suppress(nats.errors.Error):
                    await msg.nak()
        if self._psub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._psub.unsubscribe()
        with contextlib.suppress(nats.errors.Error):
            await self.nc.drain()
        self.handled.close()

    async def __aenter__(self) -> AgencyClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- directories ----------------------------------------------------------------

    async def refresh_directories(self, timeout: float = 10.0) -> dict[str, int | None]:
        """Fetch the directories the hub holds that are newer than ours; install those that verify.

        SPEC §8: first the hub's index (country → version), then one answer per
        directory, so no answer outgrows a NATS message. Retried until
        ``timeout``: a hub that is restarting answers a moment later.
        """
        deadline = time.monotonic() + timeout
        await self._learn_federation(deadline)
        try:
            index = msgspec.msgpack.decode(
                await self._ask_directory(b"", deadline), type=dict[str, int]
            )
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise IoError("hub sent a malformed directory index") from None
        for country, version in sorted(index.items()):
            if (self.keys.version(country) or 0) >= version:
                continue
            data = await self._ask_directory(country.encode("ascii"), deadline)
            try:
                self.keys.update(country, data, self.clock())
            except IxbError as exc:
                log.warning("directory_refused", country=country, code=exc.code)
        self._choose_signer()
        return {c: self.keys.version(c) for c in index}

    async def _learn_federation(self, deadline: float) -> None:
        """The hub's federation version, if it follows ours (SPEC §12, Federation file
        versions): its anchors replace ours, a hub key it changed valid for
        :data:`~protocols.federation.KEY_GRACE_MS` more."""
        held = self.federation
        if held is None:
            return
        offered = await self._ask_directory(FEDERATION_REQUEST, deadline)
        try:
            new = learn_federation(self.federation_state, held, offered)
        except IxbError as exc:
            log.warning("federation_refused", code=exc.code, detail=exc.detail)
            return
        if new is None:
            return
        now = self.clock()
        # one step back (SPEC §12, Key validity across versions, rule 3): only the keys
        # of the version replaced get a grace, not those it had retired itself
        trust = new.trust.with_retired(TrustAnchors(held.name, held.trust.hubs), now + KEY_GRACE_MS)
        dropped = self.keys.replace_anchors(trust, now)
        self.federation = new
        log.info(
            "federation_installed",
            version=new.version,
            digest=new.digest(),
            directories_dropped=list(dropped),
        )

    def _choose_signer(self) -> None:
        """Sign with the held keys our directory lists as current (rotation, SPEC §12 2.6)."""
        self._refreshed = time.monotonic()
        if len(self.held_keys) == 1:
            return
        try:
            listed = self.keys.entry(self.principal).signing_key
        except IxbError:
            return
        for held in self.held_keys:
            if held.public().signing == listed and held is not self.identity:
                log.info("signing_key_switched", agency=str(self.principal))
                self.identity = held
        if self.identity is self._newest:
            self._drop_previous()

    def _drop_previous(self) -> None:
        """Our newest keys are listed: the replaced set's signing key is of no more use, and
        its encryption key, once the key file keeps it as retired, is destroyed with the
        retired keys (after drain and grace). Then ``….key.previous`` goes."""
        if self.key_file is None:
            return
        previous = [held for held in self.held_keys if held is not self._newest]
        retired = {r.key.public for r in self.key_file.state.history.retired}
        if any(h.encryption is not None and h.encryption.public not in retired for h in previous):
            return  # a key file from before rotations carried the old key: keep the file
        path = previous_key_file(self.key_file.path)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("previous_keys_kept", agency=str(self.principal), error=str(exc))
            return
        self.held_keys = (self._newest,)
        log.info("previous_keys_destroyed", agency=str(self.principal), file=str(path))

    async def _check_directories(self) -> None:
        """Directories older than :attr:`directory_refresh_s` are asked for again (more often,
        :data:`ROTATION_CHECK_S`, while our own newest keys are not listed yet)."""
        period = ROTATION_CHECK_S if self.identity is not self._newest else self.directory_refresh_s
        if time.monotonic() - self._refreshed > period:
            with contextlib.suppress(IxbError):  # the hub is slow: send with what we have
                await self.refresh_directories(timeout=2.0)

    async def _ask_directory(self, request: bytes, deadline: float) -> bytes:
        while True:
            try:
                reply = await self.nc.request(
                    subjects.directory_request(self.principal.country), request, timeout=2.0
                )
            except (TimeoutError, nats.errors.Error) as exc:
                if time.monotonic() >= deadline:
                    raise IoError(f"hub did not answer the directory request: {exc}") from None
                await asyncio.sleep(0.5)
            else:
                return bytes(reply.data)

    # --- encryption keys over time (agency_client/enckeys.py) ---------------------

    async def maintain_keys(self) -> None:
        """Rotate the encryption key when due, list it at the hub, destroy retired keys.

        Cheap when there is nothing to do (at most every :data:`KEY_CHECK_MS`);
        :meth:`send` and :meth:`fetch` call it. A failure is logged and tried
        again later: sending and receiving go on with the keys held.
        """
        if self.key_file is None:
            return
        now = self.clock()
        if now < self._next_key_check:
            return
        self._next_key_check = now + self.key_check_ms
        try:
            await self._maintain_keys(self.key_file, now)
        except (IxbError, nats.errors.Error, TimeoutError) as exc:
            self._next_key_check = now + KEY_RETRY_MS
            code = exc.code if isinstance(exc, IxbError) else "ixb.E_IO"
            log.warning("key_maintenance_failed", agency=str(self.principal), code=code)

    async def _maintain_keys(self, key_file: KeyFile, now: int) -> None:
        try:
            listed = self.keys.entry(self.principal)
        except IxbError:
            return  # no directory of ours yet
        state = await asyncio.to_thread(key_file.reload)
        if listed.signing_key != state.identity.signing.public:
            return  # a signing-key rotation waits for the operator: not now
        if listed.encryption_key == state.encryption.public and state.due(self.key_schedule, now):
            state = await asyncio.to_thread(key_file.rotate, now)
        self._install_keys(state)
        if listed.encryption_key != state.encryption.public:
            if not any(r.public().encryption == listed.encryption_key for r in self._retired):
                # not ours, nor an operator's rotation in progress (signing keys agree):
                # someone holding our signing key listed a key of theirs
                log.error(
                    "encryption_key_unknown",
                    agency=str(self.principal),
                    listed=key_id(KeyAlg.X25519, listed.encryption_key).hex(),
                    detail="the hub lists an encryption key this key file never held",
                )
                return
            if not await self._send_key_update(state, now):
                return  # accepted, but our directory copy is behind: the next check
            listed = self.keys.entry(self.principal)
        doomed = state.destroyable(self.key_schedule, listed.encryption_key, now)
        if doomed and await self._inbox_drained():
            state = await asyncio.to_thread(key_file.destroy, {r.key.public for r in doomed}, now)
            self._install_keys(state)

    async def rotate_encryption_key(self) -> KeyState:
        """A new encryption key now, whatever the schedule, listed by the hub on return.

        ``ixb keys rotate --encryption-only``. A key made before and not yet
        listed (the hub refused or was unreachable) is sent again, not replaced.
        """
        if self.key_file is None:
            raise LocalError("this client was opened without its key file")
        now = self.clock()
        listed = self.keys.entry(self.principal)
        state = await asyncio.to_thread(self.key_file.reload)
        if listed.signing_key != state.identity.signing.public:
            raise UsageError(
                "a signing-key rotation waits for the hub's operator; rotate encryption after it"
            )
        if listed.encryption_key == state.encryption.public:
            state = await asyncio.to_thread(self.key_file.rotate, now)
        self._install_keys(state)
        if not await self._send_key_update(state, now):
            raise IoError("the hub accepted the key but does not list it yet; ask again later")
        return state

    def _install_keys(self, state: KeyState) -> None:
        if state.identity.signing.public != self.identity.signing.public:
            return
        self.identity = self._newest = state.identity
        self.held_keys = (state.identity, *self.held_keys[1:])
        self._retired = state.decryption_identities()[1:]

    async def _send_key_update(self, state: KeyState, now: int) -> bool:
        """Ask our hub to list our current encryption key (SPEC §12.1); True once it does.

        A refusal is raised as its typed error (SPEC §9 code)."""
        update = KeyUpdate(
            v=1, agency=str(self.principal), encryption_key=state.encryption.public, created=now
        )
        reply = await self.nc.request(
            subjects.key_update(self.principal),
            sign_update(update, state.identity),
            timeout=KEY_REQUEST_S,
        )
        answer = decode_answer(bytes(reply.data))
        if answer.code is not None:
            log.warning(
                "key_update_refused",
                agency=str(self.principal),
                code=answer.code,
                detail=answer.detail,
            )
            raise error_for_code(answer.code, f"the hub refused our key update: {answer.detail}")
        log.info(
            "key_update_accepted",
            agency=str(self.principal),
            fingerprint=update.fingerprint,
            version=answer.version,
        )
        await self.refresh_directories(timeout=KEY_REQUEST_S)
        return self.keys.entry(self.principal).encryption_key == state.encryption.public

    async def _inbox_drained(self) -> bool:
        """Condition (b): nothing in our inbox waits to be read or acknowledged."""
        info = await self.js.consumer_info(INBOX_STREAM, self.principal.name, timeout=KEY_REQUEST_S)
        return (info.num_pending or 0) + (info.num_ack_pending or 0) == 0

    # --- sending --------------------------------------------------------------------

    async def send(
        self,
        body: Body,
        to: Sequence[str | Principal],
        *,
        handling: HandlingCode = HandlingCode.H0,
        priority: Priority = Priority.NORMAL,
        ttl_ms: int = DEFAULT_TTL_MS,
        restriction: str | None = None,
        case_ref: str | None = None,
        in_reply_to: bytes | None = None,
        forward_of: bytes | None = None,
    ) -> bytes:
        """Sign, encrypt to every recipient, publish to our hub; returns the message id.

        Returns once the hub's JetStream stored it. Raises
        :class:`~protocols.errors.UnknownOutcomeError` (with the id and the
        sealed bytes) when JetStream never confirmed it after
        :data:`PUBLISH_ATTEMPTS`: retry with :meth:`resend`, never by sending
        the body again.
        """
        data, env = await self._seal(
            body,
            to,
            handling=handling,
            priority=priority,
            ttl_ms=ttl_ms,
            restriction=restriction,
            case_ref=case_ref,
            in_reply_to=in_reply_to,
            forward_of=forward_of,
        )
        header = env.header
        await self._publish(data, env)
        log.info("sent", msg_id=header.message_id, type=header.type, to=len(header.recipients))
        if self.on_sent is not None:
            self.on_sent(header)
        return header.id

    async def _seal(
        self,
        body: Body,
        to: Sequence[str | Principal],
        *,
        handling: HandlingCode = HandlingCode.H0,
        priority: Priority = Priority.NORMAL,
        ttl_ms: int = DEFAULT_TTL_MS,
        restriction: str | None = None,
        case_ref: str | None = None,
        in_reply_to: bytes | None = None,
        forward_of: bytes | None = None,
    ) -> tuple[bytes, Envelope]:
        """Sign and encrypt ``body`` to ``to``, remembered as sent (for its receipts)."""
        check_victim_handling(body, handling)  # before any network call: SPEC §6
        recipients = [p if isinstance(p, Principal) else parse_agency(p) for p in to]
        await self._check_directories()
        await self.maintain_keys()
        missing = [r for r in recipients if self.keys.version(r.country) is None]
        if missing:
            await self.refresh_directories()
        now = self.clock()
        try:
            publics = [self.keys.encryption_key(r, now) for r in recipients]
        except UnknownSenderError as exc:  # the directories' word for "not listed"
            raise UnknownRecipientError(exc.detail) from None
        data = seal_envelope(
            sender=self.identity,
            recipients=publics,
            body=body,
            now_ms=now,
            ttl_ms=ttl_ms,
            handling=handling,
            priority=priority,
            restriction=restriction,
            case_ref=case_ref,
            in_reply_to=in_reply_to,
            forward_of=forward_of,
        )
        env = decode_envelope(data)
        self.remember_sent(env.header.id, recipients)
        return data, env

    async def resend(self, sealed: bytes) -> bool:
        """Publish a sealed envelope of ours again, same bytes, same ``Nats-Msg-Id``.

        For a send whose outcome was unknown (``UnknownOutcomeError.sealed``).
        Returns True if JetStream already held it (the earlier attempt got
        through; nothing was stored twice), False if this publish stored it.
        After the stream's duplicate window (10 minutes) JetStream cannot
        tell, and the hub drops a copy of a routed envelope under this
        ``Nats-Msg-Id`` as a duplicate (SPEC §8.1): still delivered once.
        Raises ``UnknownOutcomeError``
        again if this attempt is not confirmed either.
        """
        try:
            env = decode_envelope(sealed)
        except IxbError as exc:
            raise LocalError(f"not a sealed envelope: {exc.detail}") from None
        header = env.header
        if header.sender_principal != self.principal:
            raise LocalError(f"{header.message_id} was sealed by {header.sender}, not by us")
        self.remember_sent(header.id, header.recipient_principals)
        duplicate = await self._publish(sealed, env)
        log.info("resent", msg_id=header.message_id, already_stored=duplicate)
        return duplicate

    def remember_sent(self, msg_id: bytes, recipients: Sequence[Principal]) -> None:
        """Record that this agency sent ``msg_id`` to ``recipients``, to check its receipts.

        :meth:`send` records every message; a command line that sent in an
        earlier run hands its record in. Bounded: the oldest are forgotten,
        and their receipts are checked without the original.
        """
        self._sent.pop(msg_id, None)
        self._sent[msg_id] = tuple(recipients)
        while len(self._sent) > MAX_SENT_RECORDS:
            del self._sent[next(iter(self._sent))]

    async def _publish(self, data: bytes, env: Envelope) -> bool:
        """JetStream publish of ``env`` (``data``), de-duplicated by its id and digest
        (SPEC §8.1); retried on timeouts.

        Returns whether JetStream already held it. An attempt that timed out
        may still be stored: nats-py buffers publishes while reconnecting and
        sends them once connected, long after the attempt gave up; hence
        every attempt carries the same ``Nats-Msg-Id``, and running out of
        attempts is an unknown outcome, not a failure.
        """
        subject = subjects.ingress(self.principal)
        msg_id = env.header.message_id
        nats_id = subjects.ingress_msg_id(msg_id, env.digest)
        last = "no answer"
        attempt = 0
        leaderless_until = time.monotonic() + streams.LEADERLESS_RETRY_S
        while attempt < PUBLISH_ATTEMPTS:
            try:
                ack = await self.js.publish(
                    subject, data, headers={"Nats-Msg-Id": nats_id}, timeout=PUBLISH_TIMEOUT_S
                )
            except (
                TimeoutError,
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.errors.ConnectionReconnectingError,
            ) as exc:
                # nats.py#751: retry with the same Nats-Msg-Id; JetStream stores it once
                last = type(exc).__name__
                attempt += 1
                await asyncio.sleep(0.2 * attempt)
            except nats.errors.Error as exc:
                # A clustered country electing a stream leader: retried for a while,
                # without using up the attempts meant for a silent server.
                if not streams.no_leader(exc):
                    raise
                last = f"{type(exc).__name__} (no stream leader)"
                if time.monotonic() > leaderless_until:
                    break
                await asyncio.sleep(streams.LEADERLESS_PAUSE_S)
            else:
                return bool(ack.duplicate)
        log.warning("send_outcome_unknown", msg_id=msg_id, attempts=PUBLISH_ATTEMPTS, error=last)
        raise UnknownOutcomeError(
            f"the hub never confirmed {msg_id} ({PUBLISH_ATTEMPTS} attempts, last: {last});"
            " it may have been stored: resend the same envelope, never a new one",
            message_id=env.header.id,
            sealed=data,
        )

    async def reply(self, to: Incoming, body: Body, **kw: object) -> bytes:
        """Answer ``to``: same case reference, ``in_reply_to`` set, sent to its sender.

        A lookup handed over on the serve subject is answered on its reply
        subject (SPEC §14): the hub records and countersigns it on its way back;
        anything else over the durable path.
        """
        kw.setdefault("case_ref", to.header.case_ref)
        lookup = to._lookup
        if lookup is None:
            return await self.send(body, [to.sender], in_reply_to=to.header.id, **kw)  # type: ignore[arg-type]
        to._lookup = None  # one answer
        data, env = await self._seal(body, [to.sender], in_reply_to=to.header.id, **kw)  # type: ignore[arg-type]
        try:
            await lookup.respond(data)
        except nats.errors.Error as exc:
            raise IoError(f"could not answer lookup {to.message_id}: {exc}") from None
        log.info("lookup_answered", msg_id=env.header.message_id, request=to.message_id)
        return env.header.id

    async def send_read_receipt(self, item: Incoming) -> None:
        """Tell the sender a human read it (never for receipts, never to hubs)."""
        if item.header.type == "receipt":
            return
        await self.send_read(item.header.id, item.sender)

    async def send_read(self, msg_id: bytes, sender: Principal) -> None:
        """Tell ``sender`` a human read its message ``msg_id`` (a hub is told nothing)."""
        if sender.is_hub:
            return
        body = Receipt(
            for_id=msg_id, status=ReceiptStatus.READ, by=str(self.principal), at_ms=self.clock()
        )
        await self.send(body, [sender], in_reply_to=msg_id)

    # --- receiving ------------------------------------------------------------------

    async def _bind(self) -> JetStreamContext.PullSubscription:
        if self._keepalive is None:
            self._keepalive = asyncio.create_task(
                keep_in_progress(self._held.values, KEEPALIVE_S), name="ixb-inbox-keepalive"
            )
        if self._psub is None:
            self._psub = await self.js.pull_subscribe_bind(
                self.principal.name,
                INBOX_STREAM,
                inbox_prefix=(subjects.reply_prefix(self.principal.name) + ".").encode(),
            )
        return self._psub

    async def fetch(self, batch: int = FETCH_BATCH, timeout: float = 1.0) -> list[Item]:
        """Up to ``batch`` items, waiting at most ``timeout`` seconds (0: what is there now).
        Receipts are recorded too."""
        timeout = max(timeout, MIN_FETCH_S)  # nats-py refuses a fetch without a wait
        if self._pending:
            out, self._pending = self._pending[:batch], self._pending[batch:]
            return out
        await self.maintain_keys()
        psub = await self._bind()
        try:
            msgs = await fetch_ready(psub, batch, timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except nats.errors.Error as exc:
            self._psub = None  # nats.py#234/#504: re-bind after a reconnect
            if streams.no_leader(exc):
                # a clustered country electing the inbox consumer's leader (seconds):
                # nothing to hand over yet; answered at once, so pause before the next try
                await asyncio.sleep(min(timeout, streams.LEADERLESS_PAUSE_S))
                return []
            raise
        return await self._verify_all(msgs)

    async def _verify_all(self, msgs: list[Msg]) -> list[Item]:
        out: list[Item] = []
        for msg in msgs:
            item = await self._verify(msg)
            if item is not None:
                out.append(item)
        return out

    def _handled_by_application(self, item: Incoming) -> None:
        if self.keep is not None and not isinstance(item.body, Receipt):
            self.keep(item)  # stored before the ack: a crash in between loses nothing
        self._held.pop(item._key, None)
        self.handled.add(item.header.sender, item.header.id, item.header.expires)

    async def _verify(self, msg: Msg) -> Item | None:
        """The item to hand over, or None for a message the application already has."""
        now = self.clock()
        msg_id: str | None = None
        try:
            try:
                env = verify_envelope(msg.data, self.keys, now)
            except (UnknownSenderError, DirectoryError):
                # a sender from a directory (or key) newer than ours: fetch, then try once more
                await self.refresh_directories()
                env = verify_envelope(msg.data, self.keys, now)
            msg_id = env.header.message_id
            key = (env.header.sender, env.header.id)  # ids are unique per sender (§4.7 step 10)
            seq = msg.metadata.sequence.stream
            if self._stream_seq.get(key) != seq:
                # a second stream message with a seen id is a replay; the same stream
                # message again (we left it unacked) is a redelivery and is fine
                self.replay.check_and_record(*key, env.header.expires, now)
                self._stream_seq[key] = seq
                if len(self._stream_seq) > MAX_TRACKED_SEQUENCES:
                    self._stream_seq = {
                        k: v for k, v in self._stream_seq.items() if self.replay.seen(*k, now)
                    }
            sender = env.header.sender
            if key in self.handled:
                # handled and acked before (maybe in an earlier run) and the ack was lost
                await msg.ack()
                log.info("inbox_redelivery_skipped", msg_id=msg_id, sender=sender)
                return None
            if key in self._held:
                # redelivered while the application still holds it: its ack settles both
                log.info("inbox_redelivery_held", msg_id=msg_id, sender=sender)
                return None
            try:
                hubs = verify_hops(env.envelope, self.keys, now)  # step 11
            except SignatureError:
                # a hub key from a federation version newer than ours: learn it, try once more
                await self.refresh_directories()
                hubs = verify_hops(env.envelope, self.keys, now)
            opened = self._open(env)
            if isinstance(opened.body, Receipt):
                self._check_receipt(opened.header, opened.body)
        except IxbError as exc:
            log.warning("inbox_refused", msg_id=msg_id, code=exc.code)
            await msg.term()
            return Refused(exc, msg_id)
        item = Incoming(opened.header, opened.body, env.envelope, hubs, msg, self)
        self._held[key] = msg
        if isinstance(item.body, Receipt):
            signed = SignedReceipt(item.body, item.sender, hubs)
            new = False
            for for_id in item.body.ids:
                new |= keep_receipt(self.receipts, format_message_id(for_id), signed)
            if new and self.on_receipt is not None:
                self.on_receipt(signed)  # once per receipt: it names all its ids
            for waiter in self._receipt_waiters:
                if not waiter.done():
                    waiter.set_result(None)
        return item

    def _open(self, env: VerifiedEnvelope) -> Opened:
        """Decrypt with the held key it was sealed to (the newest, one before, or retired)."""
        error: DecryptError | None = None
        for held in (*self.held_keys, *self._retired):
            try:
                return open_envelope(env, held)
            except DecryptError as exc:
                error = exc
        assert error is not None  # noqa: S101 - held_keys is never empty
        raise error

    def _check_receipt(self, header: Header, receipt: Receipt) -> None:
        """Refuse a receipt its signer may not make (SPEC §5 receipt).

        Always the part that needs no original; for each message it names that
        this client sent, the whole rule against that message's recipients.
        """
        signer = header.sender_principal
        check_receipt_signer(receipt, signer, in_reply_to=header.in_reply_to)
        check_reminder(receipt, signer, self.principal)
        for for_id in receipt.ids:
            recipients = self._sent.get(for_id)
            if recipients is not None:
                check_receipt_statement(receipt, signer, self.principal, recipients)

    async def inbox(
        self, *, stop: asyncio.Event | None = None, idle_timeout: float | None = None
    ) -> AsyncIterator[Item]:
        """Yield items as they arrive; ends when ``stop`` is set or after ``idle_timeout`` idle."""
        idle_since = time.monotonic()
        while stop is None or not stop.is_set():
            items = await self.fetch(timeout=0.5)
            if items:
                idle_since = time.monotonic()
            elif idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                return
            for item in items:
                yield item

    async def request(
        self, body: Body, to: Sequence[str | Principal], *, timeout: float = 10.0, **kw: object
    ) -> Incoming:
        """Send and wait for the correlated answer; other arrivals stay queued for :meth:`fetch`.

        The answer is the first message naming the request in ``in_reply_to``
        from one of its recipients, of the type that answers its type (SPEC §5);
        anyone else's stays queued like any other arrival. A hub's rejection of
        the request ends the wait as soon as it arrives: raised as the typed
        error of its code, naming the hub that signed it (the receipt itself is
        in :attr:`receipts`). No answer within ``timeout``: ``IoError``.
        """
        msg_id = await self.send(body, to, **kw)  # type: ignore[arg-type]
        owners = self._sent.get(msg_id, ())
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            psub_items = await self._fetch_fresh(min(left, 0.5))
            for item in psub_items:
                if (
                    isinstance(item, Incoming)
                    and item.header.in_reply_to == msg_id
                    and closes_request(
                        item.header.type,
                        item.sender,
                        item.header.recipient_principals,
                        request_type=body.TYPE,
                        request_sender=self.principal,
                        request_recipients=owners,
                    )
                ):
                    await item.ack()
                    self._pending.extend(i for i in psub_items if i is not item)
                    return item
            self._pending.extend(psub_items)
            self.raise_if_rejected(msg_id)
        raise IoError(f"no answer to {format_message_id(msg_id)} within {timeout:g} s")

    async def lookup(
        self,
        body: Body,
        to: str | Principal,
        *,
        timeout: float = LOOKUP_TIMEOUT_S,
        **kw: object,
    ) -> LookupResult:
        """A document check or person query over the synchronous path (SPEC §14).

        Returns the verified, decrypted answer (an :class:`Incoming` with nothing
        to ack), or :class:`Queued` when no responder answered in time (the answer
        comes later to the inbox). A hub's refusal is raised at once as the typed
        error of its code, naming the hub that signed it. The hub not answering
        within ``timeout``: ``IoError`` (the outcome is unknown: the lookup may
        still have reached the owner).
        """
        data, env = await self._seal(body, [to], **kw)  # type: ignore[arg-type]
        header = env.header
        try:
            reply = await self.nc.request(subjects.lookup(self.principal), data, timeout=timeout)
        except nats.errors.NoRespondersError:
            raise IoError(f"{self.principal.country}'s hub does not answer lookups") from None
        except (TimeoutError, nats.errors.TimeoutError):
            raise IoError(f"no reply to lookup {header.message_id} within {timeout:g} s") from None
        except nats.errors.Error as exc:
            raise IoError(f"lookup {header.message_id}: {exc}") from None
        if not reply.data:
            raise IoError(f"the hub refused lookup {header.message_id} without a statement")
        answer = await self._verify_reply(reply.data, self.replay)
        check_lookup_answer(answer.header, header)
        if isinstance(answer.body, Receipt):
            signed = SignedReceipt(answer.body, answer.sender, answer.hubs)
            keep_receipt(self.receipts, header.message_id, signed)
            if self.on_receipt is not None:
                self.on_receipt(signed)
            if signed.status is ReceiptStatus.QUEUED and signed.receipt.due_ms is not None:
                (owner,) = header.recipient_principals
                log.info("lookup_queued", msg_id=header.message_id, by=str(signed.signer))
                if self.on_sent is not None:  # a request now waiting for a person's answer
                    self.on_sent(header)
                return Queued(header.id, owner, signed.signer, signed.receipt.due_ms, signed)
            if signed.status is ReceiptStatus.REJECTED:
                self.raise_if_rejected(header.id)
            raise UnauthorisedError(f"a {signed.status} receipt does not answer a lookup")
        if self.keep is not None:
            self.keep(answer)  # the agency's store keeps answers as it keeps its inbox
        return answer

    async def lookup_each(
        self, body: Body, to: Sequence[str | Principal], **kw: object
    ) -> dict[Principal, LookupResult | IxbError]:
        """The same lookup to several agencies at once (a person query to several countries):
        one result, or the typed error, per agency."""
        owners = [p if isinstance(p, Principal) else parse_agency(p) for p in to]
        results = await asyncio.gather(
            *(self.lookup(body, owner, **kw) for owner in owners),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        out: dict[Principal, LookupResult | IxbError] = {}
        for owner, result in zip(owners, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, IxbError):
                raise result
            out[owner] = result
        return out

    async def _verify_reply(self, data: bytes, replay: ReplayGuard) -> Incoming:
        """A lookup or its reply, verified like an inbox message (§4.7 at the recipient).

        Lookups served have a replay guard of their own: one the hub queued in
        the inbox after its wait ended is the same (sender, id), and is served again.
        """
        now = self.clock()
        try:
            env = verify_envelope(data, self.keys, now)
        except (UnknownSenderError, DirectoryError):
            await self.refresh_directories()
            env = verify_envelope(data, self.keys, now)
        replay.check_and_record(env.header.sender, env.header.id, env.header.expires, now)
        try:
            hubs = verify_hops(env.envelope, self.keys, now)
        except SignatureError:
            await self.refresh_directories()
            hubs = verify_hops(env.envelope, self.keys, now)
        opened = self._open(env)
        if isinstance(opened.body, Receipt):
            self._check_receipt(opened.header, opened.body)
        return Incoming(opened.header, opened.body, env.envelope, hubs)

    def rejection(self, msg_id: bytes) -> SignedReceipt | None:
        """The first rejection receipt seen for ``msg_id``, if any."""
        for r in self.receipts.get(format_message_id(msg_id), []):
            if r.status is ReceiptStatus.REJECTED:
                return r
        return None

    def raise_if_rejected(self, msg_id: bytes) -> None:
        """Raise the typed error of a rejection seen for ``msg_id`` (code, detail, signer)."""
        r = self.rejection(msg_id)
        if r is not None:
            raise error_for_code(
                r.receipt.code or "ixb.E_PEER",
                f"{r.signer} rejected {format_message_id(msg_id)}: {r.receipt.detail or '-'}",
            )

    async def wait_outcome(
        self, msg_id: bytes, until: ReceiptStatus, *, timeout: float = 30.0
    ) -> list[SignedReceipt]:
        """Wait until ``msg_id`` is ``until`` (accepted by our hub, or delivered by the hub
        of every recipient's country) or rejected, whichever comes first.

        Returns the receipts that show it (a rejection: a list of one). Receipts
        are acked as they are recorded in :attr:`receipts`; anything else stays
        queued for :meth:`fetch`. Nothing conclusive within ``timeout``: ``IoError``.
        """
        key = format_message_id(msg_id)
        countries = {r.country for r in self._sent.get(msg_id, ())}
        deadline = time.monotonic() + timeout
        while True:
            rejected = self.rejection(msg_id)
            if rejected is not None:
                return [rejected]
            seen = [r for r in self.receipts.get(key, []) if r.status is until]
            by_hubs = {r.signer.country for r in seen if r.signer.is_hub}
            if until is ReceiptStatus.ACCEPTED:
                countries = {self.principal.country}  # our hub accepts
            if countries and countries <= by_hubs:
                return seen
            left = deadline - time.monotonic()
            if left <= 0:
                raise IoError(f"no {until.value} receipt for {key} within {timeout:g} s")
            for item in await self._fetch_fresh(min(left, 0.5)):
                if isinstance(item, Incoming) and isinstance(item.body, Receipt):
                    await item.ack()
                else:
                    self._pending.append(item)

    async def _fetch_fresh(self, timeout: float) -> list[Item]:
        psub = await self._bind()
        try:
            msgs = await fetch_ready(psub, FETCH_BATCH, timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        return await self._verify_all(msgs)

    async def wait_receipt(
        self, msg_id: bytes, status: ReceiptStatus, *, timeout: float = 10.0
    ) -> SignedReceipt:
        """Wait until a receipt of ``status`` for ``msg_id`` was seen (fetching as needed)."""
        key = format_message_id(msg_id)
        deadline = time.monotonic() + timeout
        while True:
            for r in self.receipts.get(key, []):
                if r.receipt.status is status:
                    return r
            left = deadline - time.monotonic()
            if left <= 0:
                raise IoError(f"no {status.value} receipt for {key} within {timeout:g} s")
            items = await self._fetch_fresh(min(left, 1.0))
            for item in items:
                if isinstance(item, Incoming) and isinstance(item.body, Receipt):
                    await item.ack()
                else:
                    self._pending.append(item)

    async def serve(
        self,
        handlers: Mapping[str, Callable[[AgencyClient, Incoming], Awaitable[None]]],
        stop: asyncio.Event,
        *,
        concurrency: int = 1,
        ready: asyncio.Event | None = None,
    ) -> None:
        """Automated responder: call the handler of each arriving type, then ack.

        ``ready`` is set once the server holds the lookup subscription (SPEC §14):
        from then on a lookup finds this responder instead of being queued.

        Types without a handler are acked (receipts, mostly); a handler that
        fails with a typed error puts the message back for redelivery after
        :data:`HANDLER_RETRY_S` and is logged with the message id. A handler
        may take as long as it needs: the message is kept from redelivery
        meanwhile. With ``concurrency`` >
        1, up to that many handlers run at once (each mostly waits for its
        answer's JetStream ack): only for handlers whose answers do not depend
        on each other's order, such as a document registry's.
        """
        slots = asyncio.Semaphore(max(1, concurrency))

        async def lookup(
            handler: Callable[[AgencyClient, Incoming], Awaitable[None]], msg: Msg
        ) -> None:
            try:
                item = await self._verify_reply(msg.data, self._served)
                item._lookup = msg
                await handler(self, item)
            except IxbError as exc:
                # unanswered: the hub queues it in our inbox when its wait ends
                log.warning("lookup_handler_failed", code=exc.code, detail=exc.detail)
            finally:
                slots.release()

        async def one(
            handler: Callable[[AgencyClient, Incoming], Awaitable[None]], item: Incoming
        ) -> None:
            try:
                await handler(self, item)
            except IxbError as exc:
                log.warning("handler_failed", msg_id=item.message_id, code=exc.code)
                with contextlib.suppress(nats.errors.Error):
                    await item.leave(delay=HANDLER_RETRY_S)
                return
            finally:
                slots.release()
            await item.ack()

        async with asyncio.TaskGroup() as handling:

            async def on_lookup(msg: Msg) -> None:
                handler = handlers.get(_type_of(msg.data))
                if handler is None:
                    return  # not ours to answer here: the hub queues it when its wait ends
                await slots.acquire()
                handling.create_task(lookup(handler, msg))

            sub = await self.nc.subscribe(
                subjects.serve(self.principal), queue=subjects.SERVE_QUEUE, cb=on_lookup
            )
            try:
                if ready is not None:
                    await self.nc.flush(timeout=SERVE_READY_S)  # the server has the subscription
                    ready.set()
                await self._serve_inbox(handlers, stop, slots, handling, one)
            finally:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()

    async def _serve_inbox(
        self,
        handlers: Mapping[str, Callable[[AgencyClient, Incoming], Awaitable[None]]],
        stop: asyncio.Event,
        slots: asyncio.Semaphore,
        handling: asyncio.TaskGroup,
        one: Callable[
            [Callable[[AgencyClient, Incoming], Awaitable[None]], Incoming],
            Coroutine[Any, Any, None],
        ],
    ) -> None:
        """The durable half of :meth:`serve`: requests that came (or were queued) to the inbox."""
        async for item in self.inbox(stop=stop):
            if isinstance(item, Refused):
                continue
            handler = handlers.get(item.header.type)
            if handler is None:
                await item.ack()
                continue
            await slots.acquire()
            handling.create_task(one(handler, item))


def _type_of(data: bytes) -> str:
    """The type an envelope's header claims (verified before anything is handled)."""
    try:
        return decode_envelope(data).header.type
    except IxbError:
        return ""


def _same_statement(a: SignedReceipt, b: SignedReceipt) -> bool:
    return (a.signer, a.status, a.receipt.code) == (b.signer, b.status, b.receipt.code)


def keep_receipt(
    receipts: dict[str, list[SignedReceipt]],
    msg_id: str,
    signed: SignedReceipt,
    limit: int = MAX_RECEIPT_RECORDS,
) -> bool:
    """Add ``signed`` to what ``msg_id`` was told, unless it states nothing new (a hub that
    crashed mid-batch may state it again in another grouping, with a later time); the
    oldest messages' receipts go once more than ``limit`` messages have some (a responder
    runs for months). Returns whether it was new."""
    kept = receipts.setdefault(msg_id, [])
    if any(_same_statement(r, signed) for r in kept):
        return False
    kept.append(signed)
    while len(receipts) > limit:
        del receipts[next(iter(receipts))]
    return True


def load_identity_for(profile: Profile, passphrase: str) -> Identity:
    return load_identity(profile.path(profile.agency.key_file), passphrase)


def previous_key_file(key_file: Path) -> Path:
    """Where ``ixb keys rotate`` keeps the keys it replaced."""
    return key_file.with_name(key_file.name + ".previous")


def load_previous_for(profile: Profile, passphrase: str) -> Identity | None:
    """The keys replaced by the last ``ixb keys rotate``, if kept."""
    path = previous_key_file(profile.path(profile.agency.key_file))
    return load_identity(path, passphrase) if path.exists() else None
