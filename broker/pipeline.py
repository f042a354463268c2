"""The hub's decisions, apart from NATS: bytes and their source in, an outcome out.

Steps, for an envelope from a local agency's ingress or from a peer
country's link (SPEC §4.7's numbers in the code):

0. limits before work: a token of the publishing agency's rate limit, taken
   before anything is decoded (NATS authenticated the publisher);
1. decode (§4.7 steps 1-4); the publishing identity matches the claimed
   sender (an agency publishes only on its own ingress subject; a peer link
   only carries its own country's senders); verify (steps 5-9): sender
   current in its hub-signed directory, signature, freshness;
2. idempotency and replay (step 10), keyed by (sender, id): the same
   envelope seen again is a duplicate (its routing is finished, never
   repeated); another envelope under a sender's known id is a replay. A
   message is routed when the store says so, or when the audit log holds
   its acceptance (:class:`RecordedDecisions`: the store's routed mark is
   written after the entries, and that write may have failed);
3. hops (step 11): each hub countersignature verifies, and a link carries
   its own hub's;
4. policy: the sender's roles may send this type; every recipient exists and
   is current; the country pair exchanges this type; declared forwards
   respect the original's handling code (H2, H3); a receipt's signer may
   speak of the message it names (SPEC §5 receipt);
5. the caller records the decision and routes what it is told to.

Nothing here touches the network, so every branch is tested directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from broker.config import HubConfig
from broker.ratelimit import RateLimiter
from protocols import subjects
from protocols.envelope import (
    Envelope,
    Header,
    add_hop,
    decode_envelope,
    verify_envelope,
    verify_hops,
)
from protocols.errors import (
    HandlingError,
    IxbError,
    ReplayError,
    SignatureError,
    UnauthorisedError,
    UnknownRecipientError,
)
from protocols.handling import HandlingCode, check_forward
from protocols.identifiers import Principal, format_message_id, hub_of, parse_principal
from protocols.keys import Identity
from protocols.limits import Limits
from protocols.receipts import check_receipt_envelope
from protocols.roles import HUB_MAY_SEND, check_may_send
from protocols.trusted import TrustedDirectories


@dataclass(frozen=True, slots=True)
class Accepted:
    """Route ``envelope`` (countersigned by this hub) to local inboxes and peer countries."""

    envelope: Envelope
    local: tuple[Principal, ...]
    peers: tuple[str, ...]
    duplicate: bool = False
    unmarked: bool = False
    """Routed and recorded by an earlier attempt whose routed mark was never written (the
    store refused it): write the mark, and nothing else (no publish, no entry)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """Refused with ``error``; ``header`` is known when the envelope parsed far enough."""

    error: IxbError
    header: Header | None
    verified: bool
    """True when the sender's signature checked out (a receipt to it is meaningful)."""


Outcome = Accepted | Rejected


@dataclass(frozen=True, slots=True)
class KnownMessage:
    """What the hub remembers of a message it accepted: for replays, redeliveries and forwards."""

    digest: bytes
    sender: str
    recipients: tuple[str, ...]
    handling: HandlingCode
    restriction: str | None
    routed: bool


class SeenMessages(Protocol):
    """The messages this hub has accepted (the hub's store implements it durably)."""

    def known(self, sender: str, message_id: bytes) -> KnownMessage | None:
        """The message ``sender`` sent under ``message_id``: ids are unique per sender."""

    def original(self, message_id: bytes, party: str) -> KnownMessage | None:
        """The message ``message_id`` that ``party`` sent or received (what a forward names)."""

    def remember(self, header: Header, digest: bytes) -> None:
        """Record an accepted message, not yet routed; part of the caller's transaction."""


class RecordedDecisions(Protocol):
    """What the hub's audit log holds (the hub's :class:`~broker.auditing.HubAudit`)."""

    def recorded(self, sender: str, message_id: bytes) -> bool:
        """Whether this hub recorded its acceptance of the message: its routing is finished.

        The hub records a message's entries once everything it caused is
        published, and only then marks it routed in its store: a message the
        store does not know as routed may still be recorded, when that mark's
        write failed.
        """


class _NothingRecorded:
    def recorded(self, sender: str, message_id: bytes) -> bool:
        return False


class Pipeline:
    def __init__(
        self,
        config: HubConfig,
        identity: Identity,
        keys: TrustedDirectories,
        seen: SeenMessages,
        limiter: RateLimiter | None = None,
        *,
        recorded: RecordedDecisions | None = None,
        unknown_acceptances_until: int = 0,
    ) -> None:
        """``unknown_acceptances_until``: until then (ms), the audit log may hold acceptances
        the store does not know (its leaves were rebuilt after an older backup was restored,
        ``ixb audit rebuild``): a message the store does not know is looked up there too."""
        self.unknown_acceptances_until = unknown_acceptances_until
        self.config = config
        self.country = config.country
        self.identity = identity
        self.keys = keys
        self.seen = seen
        self.recorded: RecordedDecisions = recorded if recorded is not None else _NothingRecorded()
        self.limits: Limits = config.wire_limits()
        self.limiter = limiter or RateLimiter(
            config.policy.max_per_minute, config.policy.burst, overrides=config.rate_limits()
        )

    # --- entry points -------------------------------------------------------------

    def from_local(
        self,
        data: bytes,
        publisher: str,
        now_ms: int,
        *,
        redelivered: bool = False,
        nats_msg_id: str | None = None,
    ) -> Outcome:
        """An envelope an agency of this country published on ``ixb.CC.ingress.<publisher>``.

        ``redelivered``: JetStream handed us this stream message before (we
        crashed or failed before acking it), as opposed to a new stream message.
        ``nats_msg_id``: the publish's ``Nats-Msg-Id`` header, if any (SPEC §8.1).
        """
        return self._process(
            data,
            now_ms,
            publisher=publisher,
            peer=None,
            redelivered=redelivered,
            nats_msg_id=nats_msg_id,
        )

    def from_peer(
        self, data: bytes, peer: str, now_ms: int, *, redelivered: bool = False
    ) -> Outcome:
        """An envelope that arrived over the link from ``peer``'s hub."""
        return self._process(data, now_ms, publisher=None, peer=peer, redelivered=redelivered)

    # --- the steps ----------------------------------------------------------------

    def _process(
        self,
        data: bytes,
        now_ms: int,
        *,
        publisher: str | None,
        peer: str | None,
        redelivered: bool,
        nats_msg_id: str | None = None,
    ) -> Outcome:
        header: Header | None = None
        verified = False
        try:
            if publisher is not None and not redelivered:
                # limits before work: NATS authenticated the publisher (its own ingress
                # subject), so a flood costs a token, not a decode and a signature check
                self.limiter.take(f"{self.country}/{publisher}", now_ms)
            env = decode_envelope(data, self.limits)  # SPEC §4.7 steps 1-4
            header = env.header
            sender = header.sender_principal
            self._check_origin(sender, publisher=publisher, peer=peer)
            verify_envelope(env, self.keys, now_ms, self.limits)  # steps 5-9
            verified = True
            # step 10: ids are unique per sender, so nobody can use up another's
            known = self.seen.known(header.sender, header.id)
            if known is not None:
                if known.digest != env.digest:
                    raise ReplayError(
                        f"message id {header.message_id} was already used for another envelope"
                    )
                # routed, or recorded as routed while the store's mark failed to be written
                unmarked = not known.routed and self.recorded.recorded(header.sender, header.id)
                if known.routed or unmarked:
                    retried = nats_msg_id == subjects.ingress_msg_id(header.message_id, env.digest)
                    if redelivered or peer is not None or retried:
                        # our own unacked copy coming back; the link's stream holding a
                        # second copy (sourcing copies again what a crashed server had not
                        # recorded as sourced); or the sender's retry, under the value it
                        # must retry with, stored twice (de-duplication does not survive
                        # every server crash): finished, nothing to repeat (SPEC §8.1),
                        # but the routed mark when that is what failed
                        return Accepted(env, (), (), duplicate=not unmarked, unmarked=unmarked)
                    # a new stream message on our ingress with an envelope we already routed,
                    # under another Nats-Msg-Id than a retry's: a replay
                    raise ReplayError(f"message {header.message_id} was already received")
            elif now_ms < self.unknown_acceptances_until and self.recorded.recorded(
                header.sender, header.id
            ):
                # accepted after the backup that was restored: the rebuilt log holds it,
                # the store does not (its digest neither: the sender's own retry or our
                # redelivery is finished; anything else under that id is a replay)
                retried = nats_msg_id == subjects.ingress_msg_id(header.message_id, env.digest)
                if redelivered or peer is not None or retried:
                    return Accepted(env, (), (), duplicate=True, unmarked=False)
                raise ReplayError(f"message {header.message_id} was already received")
            hubs = verify_hops(env, self.keys, now_ms)  # step 11
            if peer is not None and hub_of(peer) not in (*hubs, header.sender_principal):
                raise SignatureError(f"not countersigned by {peer}'s hub")
            self._check_policy(env, sender, now_ms, peer=peer)
            if peer is not None:
                # countries hand each other whole envelopes; deliver only our own recipients
                local = tuple(p for p in header.recipient_principals if p.country == self.country)
                peers: tuple[str, ...] = ()
            else:
                local = tuple(p for p in header.recipient_principals if p.country == self.country)
                peers = tuple(
                    sorted({p.country for p in header.recipient_principals} - {self.country})
                )
            countersigned = add_hop(env, self.identity, now_ms)
            self.seen.remember(header, env.digest)
            return Accepted(countersigned, local, peers)
        except IxbError as exc:
            return Rejected(exc, header, verified)

    def _check_origin(self, sender: Principal, *, publisher: str | None, peer: str | None) -> None:
        if publisher is not None and (sender.country != self.country or sender.name != publisher):
            raise UnauthorisedError(
                f"published on the ingress of {self.country}/{publisher} but signed as {sender}"
            )
        if peer is not None and sender.country != peer:
            raise UnauthorisedError(f"the link from {peer} carried a message from {sender}")

    def _check_policy(
        self, env: Envelope, sender: Principal, now_ms: int, *, peer: str | None
    ) -> None:
        header = env.header
        if sender.is_hub:
            if header.type not in HUB_MAY_SEND:
                raise UnauthorisedError(f"hubs may not send {header.type}")
        else:
            check_may_send(self.keys.roles(sender, now_ms), header.type)
        # a destination hub answers for its own recipients and its link to the sender only;
        # the origin hub already checked the rest against its own policy
        recipients = [
            r for r in header.recipient_principals if peer is None or r.country == self.country
        ]
        for recipient in recipients:
            if recipient.is_hub:
                raise UnknownRecipientError(f"{recipient} is a hub: hubs receive no content")
            if recipient.country != self.country and recipient.country not in self.config.links:
                raise UnknownRecipientError(f"{self.country} has no link to {recipient.country}")
            try:
                self.keys.encryption_key(recipient, now_ms)
            except IxbError as exc:
                raise UnknownRecipientError(f"recipient {recipient}: {exc.detail}") from None
        others = {r.country for r in recipients} | {sender.country}
        for country in sorted(others - {self.country}):
            if header.type != "receipt" and header.type not in self.config.exchanged_types(country):
                raise UnauthorisedError(
                    f"{self.country} does not exchange {header.type} with {country}"
                )
        if header.forward_of is not None:
            self._check_forward(header, str(sender), peer=peer)
        if header.type == "receipt":
            self._check_receipt(header, sender)

    def _check_receipt(self, header: Header, sender: Principal) -> None:
        """A receipt is a statement by its signer about a message (SPEC §5 receipt).

        The body is sealed to its recipient, so the hub checks what the header
        shows against its record of the original, when it has one: the receipt
        goes to the original's sender alone (so the original is the one that
        recipient sent under ``in_reply_to``), and its signer is a recipient
        (an agency) or a hub of the sender's or a recipient's country. Without
        a record (another country's message, or pruned), the receiver's SDK
        checks the statement alone.
        """
        recipients = header.recipient_principals
        if len(recipients) != 1:
            raise UnauthorisedError("receipt: addressed to others than the message's sender")
        if header.in_reply_to is None:
            return  # the header schema requires it for receipts
        original = self.seen.known(str(recipients[0]), header.in_reply_to)
        if original is None:
            return
        check_receipt_envelope(
            sender,
            recipients,
            parse_principal(original.sender),
            [parse_principal(r) for r in original.recipients],
        )

    def _check_forward(self, header: Header, sender: str, *, peer: str | None) -> None:
        if header.forward_of is None:
            return
        original = self.seen.original(header.forward_of, sender)
        if original is None:
            if peer is not None:
                return  # the forwarder's own hub enforced it; we never saw the original
            raise HandlingError(
                f"forward of unknown message {format_message_id(header.forward_of)}"
            )
        if sender not in original.recipients and sender != original.sender:
            raise HandlingError(f"{sender} never received the message it forwards")
        check_forward(
            original_handling=original.handling,
            original_restriction=original.restriction,
            original_parties=frozenset({original.sender, *original.recipients}),
            handling=header.handling,
            restriction=header.restriction,
            recipients=header.recipients,
        )


def rejection_recipient(
    outcome: Rejected, *, country: str, publisher: str | None
) -> Principal | None:
    """Who gets the signed rejection receipt, if anyone.

    On a local ingress the publisher is authenticated by NATS itself (it can
    publish only on its own subject), so it always hears why, even about a
    forgery it sent. Over a link only a sender whose signature verified is
    answered: an unverified sender field could name anybody, and answering it
    would let a forger make our hub send receipts to a victim. A hub's
    receipts are never answered (two hubs could answer each other for ever);
    an agency's (a read receipt) is, like anything else it sends: agencies
    never answer receipts, so the answer ends there.
    """
    header = outcome.header
    if header is not None and header.type == "receipt" and header.sender_principal.is_hub:
        return None
    if publisher is not None:
        return Principal(country, publisher)
    if header is not None and outcome.verified and not header.sender_principal.is_hub:
        return header.sender_principal
    return None
