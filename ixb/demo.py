"""``ixb demo``: every message type exchanged between THA, MYS and MMR, in one process.

Built from ``protocols/`` only: agencies build, sign and encrypt; a hub step
verifies the sender (metadata only), refuses replays and countersigns; the
recipient checks the hop signature, decrypts and answers. The issue "National
hubs and NATS federation" replaces the in-process hub step with real hubs
talking over NATS.

``--once`` exits 0 only if every step had the expected outcome.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from protocols.envelope import (
    Envelope,
    Opened,
    add_hop,
    decode_envelope,
    open_envelope,
    seal_envelope,
    verify_envelope,
    verify_hops,
)
from protocols.errors import IxbError
from protocols.examples import example_bodies
from protocols.handling import HandlingCode, Priority
from protocols.identifiers import Principal, hub_of, parse_agency
from protocols.keys import Identity, KeyRing
from protocols.limits import MS_PER_DAY
from protocols.messages import Body, Receipt, ReceiptStatus
from protocols.replay import ReplayGuard

AGENCIES = (
    "THA/DSI-ATHD",  # Department of Special Investigation, anti-human-trafficking division
    "THA/IMMIGRATION",
    "THA/OAG",  # central authority for MLA
    "MYS/RMP-ATIPSOM",  # police anti-trafficking unit
    "MYS/IMMIGRATION",  # document authority with an automated responder
    "MYS/AGC",  # central authority for MLA
    "MMR/MOHA-ATTU",  # anti-trafficking unit
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="run a scripted THA/MYS/MMR exchange of every message type")
    demo.add_argument(
        "--once", action="store_true", help="exit non-zero unless every step went as expected"
    )
    demo.set_defaults(func=cmd_demo)


@dataclass
class Federation:
    """Identities and one in-memory hub step per country."""

    ids: dict[Principal, Identity]
    ring: KeyRing
    replay: dict[str, ReplayGuard] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)
    failures: list[str] = field(default_factory=list)
    lines: int = 0

    @classmethod
    def create(cls) -> Federation:
        principals = [parse_agency(a) for a in AGENCIES] + [
            hub_of(c) for c in ("THA", "MYS", "MMR")
        ]
        ids = {p: Identity.generate(p) for p in principals}
        ring = KeyRing({p: i.public() for p, i in ids.items()})
        return cls(ids=ids, ring=ring)

    def agency(self, text: str) -> Identity:
        return self.ids[parse_agency(text)]

    def log(self, text: str) -> None:
        self.lines += 1
        elapsed = (time.perf_counter() - self.start) * 1000
        sys.stdout.write(f"{elapsed:8.1f} ms  {text}\n")

    def hub_accept(self, data: bytes, now_ms: int) -> Envelope:
        """What the sending and each receiving hub do: verify, refuse replays, countersign."""
        env = decode_envelope(data)
        origin = env.header.sender_principal.country
        countries = [
            origin,
            *sorted({p.country for p in env.header.recipient_principals} - {origin}),
        ]
        for country in countries:
            guard = self.replay.setdefault(country, ReplayGuard())
            env = verify_envelope(env, self.ring, now_ms, replay=guard)
            env = add_hop(env, self.ids[hub_of(country)], now_ms)
        return env

    def send(
        self,
        sender: str,
        to: list[str],
        body: Body,
        now_ms: int,
        **header: object,
    ) -> tuple[Envelope, list[Opened]]:
        ident = self.agency(sender)
        recipients = [self.ring.get(parse_agency(r)) for r in to]
        data = seal_envelope(
            sender=ident,
            recipients=recipients,
            body=body,
            now_ms=now_ms,
            ttl_ms=MS_PER_DAY,
            **header,  # type: ignore[arg-type]
        )
        env = self.hub_accept(data, now_ms)
        hubs = " → ".join(str(h) for h in verify_hops(env, self.ring))
        opened = [open_envelope(env, self.agency(r)) for r in to]
        h = env.header
        self.log(
            f"{h.type:<20} {sender} → {', '.join(to)}  [{h.handling} {h.priority}]"
            f"  id …{h.message_id[-12:]}  {len(data)} B via {hubs}"
        )
        return env, opened

    def receipt(self, by: str, env: Envelope, status: ReceiptStatus, now_ms: int) -> None:
        body = Receipt(for_id=env.header.id, status=status, by=by, at_ms=now_ms)
        self.send(by, [env.header.sender], body, now_ms, in_reply_to=env.header.id)

    def expect_refusal(self, what: str, code: str, action: Callable[[], object]) -> None:
        try:
            action()
        except IxbError as exc:
            ok = exc.code == code
            self.log(f"{'refused' if ok else 'WRONG'}: {what} → {exc.code} ({exc.detail})")
            if not ok:
                self.failures.append(f"{what}: got {exc.code}, expected {code}")
            return
        self.log(f"WRONG: {what} was accepted")
        self.failures.append(f"{what}: accepted, expected {code}")


def run(fed: Federation, now_ms: int) -> None:
    ex = example_bodies(now_ms)
    out = sys.stdout.write
    out("ixb demo: THA, MYS and MMR exchange every message type (in-process hubs)\n\n")

    alert, opened = fed.send(
        "THA/DSI-ATHD",
        ["MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU"],
        ex["alert"],
        now_ms,
        handling=HandlingCode.H2,
        priority=Priority.URGENT,
        case_ref="THA-DSI-2026-0412",
    )
    if any(o.body != ex["alert"] for o in opened):
        fed.failures.append("alert: a recipient decrypted something else")
    for recipient in alert.header.recipients:
        fed.receipt(recipient, alert, ReceiptStatus.DELIVERED, now_ms)

    req, _ = fed.send(
        "THA/IMMIGRATION",
        ["MYS/IMMIGRATION"],
        ex["doc.verify.request"],
        now_ms,
        priority=Priority.URGENT,
    )
    fed.send(
        "MYS/IMMIGRATION",
        ["THA/IMMIGRATION"],
        ex["doc.verify.response"],
        now_ms,
        in_reply_to=req.header.id,
    )

    query, _ = fed.send(
        "THA/DSI-ATHD", ["MMR/MOHA-ATTU"], ex["person.query"], now_ms, case_ref="THA-DSI-2026-0412"
    )
    fed.send(
        "MMR/MOHA-ATTU", ["THA/DSI-ATHD"], ex["person.result"], now_ms, in_reply_to=query.header.id
    )
    follow, _ = fed.send(
        "THA/DSI-ATHD",
        ["MMR/MOHA-ATTU"],
        ex["followup.request"],
        now_ms,
        in_reply_to=query.header.id,
        case_ref="THA-DSI-2026-0412",
    )
    fed.send(
        "MMR/MOHA-ATTU",
        ["THA/DSI-ATHD"],
        ex["followup.decision"],
        now_ms,
        in_reply_to=follow.header.id,
        handling=HandlingCode.H1,
    )

    mla, _ = fed.send(
        "THA/OAG",
        ["MYS/AGC"],
        ex["mla.request"],
        now_ms,
        priority=Priority.HIGH,
        case_ref="THA-OAG-MLA-2026-031",
    )
    fed.send("MYS/AGC", ["THA/OAG"], ex["mla.status"], now_ms, in_reply_to=mla.header.id)
    fed.receipt("MYS/AGC", mla, ReceiptStatus.READ, now_ms)

    out("\nbad input is refused with a typed code:\n")
    replayed = alert.to_bytes()
    fed.expect_refusal("replayed alert", "ixb.E_REPLAY", lambda: fed.hub_accept(replayed, now_ms))
    tampered = bytearray(replayed)
    tampered[len(tampered) // 2] ^= 0x01
    fed.expect_refusal(
        "alert with one bit flipped",
        "ixb.E_SIGNATURE",
        lambda: fed.hub_accept(bytes(tampered), now_ms),
    )
    fed.expect_refusal(
        "alert opened by a non-recipient",
        "ixb.E_NOT_RECIPIENT",
        lambda: open_envelope(alert, fed.agency("THA/IMMIGRATION")),
    )
    fed.expect_refusal(
        "alert after expiry",
        "ixb.E_EXPIRED",
        lambda: verify_envelope(alert, fed.ring, now_ms + 2 * MS_PER_DAY),
    )


def cmd_demo(args: argparse.Namespace) -> int:
    fed = Federation.create()
    run(fed, int(time.time() * 1000))
    if fed.failures:
        sys.stdout.write("\nFAILED:\n" + "".join(f"  {f}\n" for f in fed.failures))
        return 1
    sys.stdout.write(f"\nall {fed.lines} steps went as expected\n")
    return 0
