"""``make bench``: envelope costs as ratios against the bare libsodium operations.

Absolute times vary on shared machines, so every figure is paired with its
floor measured in the same run: a hub's verify against one bare Ed25519
verify, a sender's seal against the bare sign + seal + AEAD it is made of.
Writes ``bench/results.json``. (NATS and audit-log benchmarks join this once
the hub exists.)
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nacl.bindings
import nacl.utils
from nacl.public import PublicKey, SealedBox

from protocols.envelope import (
    decode_envelope,
    open_envelope,
    seal_envelope,
    verify_envelope,
)
from protocols.examples import example_bodies
from protocols.identifiers import parse_agency
from protocols.keys import Identity, KeyRing
from protocols.limits import MS_PER_DAY

RESULTS = Path(__file__).resolve().parent / "results.json"
SECONDS_PER_CASE = 1.5
MAX_ITERATIONS = 200_000


def rate(fn: Callable[[], object]) -> float:
    """Operations per second over a bounded time and count."""
    fn()
    n, start = 0, time.perf_counter()
    deadline = start + SECONDS_PER_CASE
    while n < MAX_ITERATIONS and time.perf_counter() < deadline:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def main() -> int:
    now = int(time.time() * 1000)
    sender = Identity.generate(parse_agency("THA/DSI-ATHD"))
    recipient = Identity.generate(parse_agency("MYS/RMP-ATIPSOM"))
    ring = KeyRing({i.principal: i.public() for i in (sender, recipient)})
    body = example_bodies(now)["alert"]
    data = seal_envelope(
        sender=sender, recipients=[recipient.public()], body=body, now_ms=now, ttl_ms=MS_PER_DAY
    )
    env = verify_envelope(data, ring, now)
    sig = sender.signing.sign(b"x" * 32)
    assert recipient.encryption is not None
    rpk = PublicKey(recipient.encryption.public)
    key, nonce = nacl.utils.random(32), nacl.utils.random(24)
    plain = b"\x00" * 1024

    def raw_seal() -> None:
        sender.signing.sign(b"x" * 32)
        SealedBox(rpk).encrypt(key)
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, b"", nonce, key)

    measured = {
        "raw_ed25519_verify_per_s": rate(
            lambda: nacl.bindings.crypto_sign_open(sig + b"x" * 32, sender.signing.public)
        ),
        "raw_seal_floor_per_s": rate(raw_seal),
        "envelope_seal_per_s": rate(
            lambda: seal_envelope(
                sender=sender,
                recipients=[recipient.public()],
                body=body,
                now_ms=now,
                ttl_ms=MS_PER_DAY,
            )
        ),
        "envelope_verify_per_s": rate(lambda: verify_envelope(data, ring, now)),
        "envelope_decode_per_s": rate(lambda: decode_envelope(data)),
        "envelope_open_per_s": rate(lambda: open_envelope(env, recipient)),
    }
    results: dict[str, object] = {
        **{k: round(v, 1) for k, v in measured.items()},
        "verify_ratio": round(
            measured["envelope_verify_per_s"] / measured["raw_ed25519_verify_per_s"], 3
        ),
        "seal_ratio": round(measured["envelope_seal_per_s"] / measured["raw_seal_floor_per_s"], 3),
        "envelope_bytes": len(data),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
        },
    }
    width = max(len(k) for k in results)
    for name, value in results.items():
        if name != "machine":
            sys.stdout.write(f"{name:<{width}}  {value}\n")
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    sys.stdout.write(f"wrote {RESULTS}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
