"""Forward secrecy on a running federation: the encryption key rotates on a schedule under
continuous traffic, nothing valid is refused or lost, and once the inbox is drained and
the grace has passed the old private key is gone from the key file, so what was sealed
to it can no longer be opened.

Also at the hub: a forged, a replayed, a too-early update and one for a revoked agency
are refused with their codes; the accepted one is in the audit log naming the agency.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog.testing
from nats.aio.msg import Msg

from agency_client.enckeys import KeyFile, KeySchedule, KeyState, open_key_file
from agency_client.profile import load_profile
from agency_client.sdk import AgencyClient, Incoming, load_identity_for
from broker.audit.search import AuditQuery
from protocols import subjects, wire
from protocols.audit import AuditEntry
from protocols.enckey import KeyUpdate, decode_answer, sign_update
from protocols.envelope import open_envelope, seal_envelope, verify_envelope
from protocols.errors import DecryptError
from protocols.examples import example_bodies
from protocols.identifiers import format_message_id
from protocols.keys import Identity, KeyAlg, key_id, open_keyfile_history
from protocols.messages import ReceiptStatus
from tests.federation import PASSPHRASE, Federation, drain_into, run_ixb, running_federation
from transport.clock import wall_ms

THA = "THA/DSI-ATHD"
MYS = "MYS/RMP-ATIPSOM"
ROTATE_MS = 3_000
GRACE_MS = 4_000


async def _until(what: str, check: object, seconds: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.2)


async def _ask(fed: Federation, agency: str, data: bytes) -> str | None:
    """An update sent on ``agency``'s subject (by the hub's own NATS user); the answer's code."""
    nc = fed.hubs["THA"].hub.nc
    assert nc is not None
    reply = await nc.request(subjects.key_update(fed.principal(agency)), data, timeout=10)
    return decode_answer(bytes(reply.data)).code


async def test_scheduled_rotation_under_traffic_then_the_old_key_is_destroyed(
    tmp_path: Path,
) -> None:
    async with running_federation(tmp_path) as fed:
        profile = load_profile(fed.deployment.profile(THA))
        key_file = open_key_file(profile, PASSPHRASE, wall_ms())
        tha = await AgencyClient.connect(profile, key_file.state.identity, key_file=key_file)
        fed.clients.append(tha)
        tha.key_schedule = KeySchedule(rotation_ms=ROTATE_MS, grace_ms=GRACE_MS)
        tha.key_check_ms = 300
        mys = await fed.client(MYS)
        mys.directory_refresh_s = 1.0
        old = tha.identity.public()
        assert old.encryption is not None
        hub = fed.hubs["THA"].hub
        assert hub.nc is not None
        seen: list[bytes] = []

        async def capture(msg: Msg) -> None:
            seen.append(bytes(msg.data))

        spy = await hub.nc.subscribe(subjects.key_update_all("THA"), cb=capture)
        # a message sealed to the old key, as an eavesdropper would have recorded it
        recorded = seal_envelope(
            sender=mys.identity,
            recipients=[old],
            body=example_bodies(0)["alert"],
            now_ms=wall_ms(),
            ttl_ms=3_600_000,
        )

        sent_by_tha: list[bytes] = []
        sent_by_mys: list[bytes] = []
        got_at_tha: dict[str, Incoming] = {}
        got_at_mys: dict[str, Incoming] = {}
        stop = asyncio.Event()

        async def traffic() -> None:
            while not stop.is_set():
                sent_by_tha.append(await tha.send(example_bodies(0)["alert"], [MYS]))
                sent_by_mys.append(await mys.send(example_bodies(0)["alert"], [THA]))
                await asyncio.sleep(0.05)

        flow = asyncio.create_task(traffic())
        try:
            # THA reads nothing yet: what is sealed to its old key waits in its inbox
            await _until(
                "the hub lists the new key",
                lambda: tha.keys.entry(tha.principal).encryption_key != old.encryption,
            )
            tha.key_schedule = KeySchedule(rotation_ms=0, grace_ms=GRACE_MS)  # one rotation
            # retired, not destroyed: what was sealed to the old key still opens
            assert tha._open(verify_envelope(recorded, tha.keys, wall_ms())).body is not None
            switched = tha.identity.public().encryption
            await _until(
                "the peer's sender sees the new key",
                lambda: mys.keys.entry(tha.principal).encryption_key == switched,
            )
            await asyncio.sleep(2.0)  # and seals to it for a while
        finally:
            stop.set()
            await flow
        await spy.unsubscribe()
        assert switched is not None and switched != old.encryption

        await drain_into(tha, got_at_tha, 4.0)
        await drain_into(mys, got_at_mys, 3.0)
        _nothing_lost(
            tha, (old.encryption, switched), sent_by_tha, sent_by_mys, got_at_tha, got_at_mys
        )

        await _destroyed_after_grace(fed, tha, key_file, old.encryption, switched, recorded)
        await _hub_refusals(fed, tha, seen)
        _audited(fed)
        print(
            f"forward secrecy: {len(sent_by_tha)} + {len(sent_by_mys)} messages across a "
            "scheduled rotation, none refused or lost; old key destroyed after drain + grace"
        )


def _nothing_lost(  # noqa: PLR0917
    tha: AgencyClient,
    keys: tuple[bytes, bytes],
    sent_by_tha: list[bytes],
    sent_by_mys: list[bytes],
    got_at_tha: dict[str, Incoming],
    got_at_mys: dict[str, Incoming],
) -> None:
    """Every message arrived and opened, none refused; both keys were sealed to."""
    assert {format_message_id(i) for i in sent_by_mys} <= set(got_at_tha)
    assert {format_message_id(i) for i in sent_by_tha} <= set(got_at_mys)
    for msg_id in sent_by_tha:
        statuses = {r.status for r in tha.receipts.get(format_message_id(msg_id), [])}
        assert ReceiptStatus.REJECTED not in statuses
    sealed_to = {
        next(s.key_id for s in item.envelope.sealed_keys if s.recipient == THA)
        for item in got_at_tha.values()
    }
    assert sealed_to == {key_id(KeyAlg.X25519, k) for k in keys}


async def _destroyed_after_grace(  # noqa: PLR0917
    fed: Federation,
    tha: AgencyClient,
    key_file: KeyFile,
    old: bytes,
    switched: bytes,
    recorded: bytes,
) -> None:
    """Drained and past the grace: the old private key is gone from the file and the client."""
    got: dict[str, Incoming] = {}
    while any(r.key.public == old for r in key_file.state.history.retired):
        await drain_into(tha, got, 0.5)
    identity, history, _ = open_keyfile_history(
        fed.deployment.key_file(tha.principal).read_bytes(), PASSPHRASE
    )
    assert identity.encryption is not None and identity.encryption.public == switched
    assert old not in {r.key.public for r in history.retired}
    # the point of it: the recorded message cannot be opened with anything in the file
    verified = verify_envelope(recorded, tha.keys, wall_ms())
    for held in KeyState(identity, history).decryption_identities():
        with pytest.raises(DecryptError):
            open_envelope(verified, held)
    with pytest.raises(DecryptError):
        tha._open(verified)


async def _hub_refusals(fed: Federation, tha: AgencyClient, seen: list[bytes]) -> None:
    """A replayed, forged, too-early, misdirected and revoked agency's update, by code."""
    assert len(seen) == 1
    assert await _ask(fed, THA, seen[0]) == "ixb.E_REPLAY"
    me = tha.identity
    fresh = KeyUpdate(
        v=1,
        agency=THA,
        encryption_key=Identity.generate(me.principal).public().encryption or b"",
        created=wall_ms(),
    )
    forged = sign_update(fresh, Identity.generate(me.principal))
    assert await _ask(fed, THA, forged) == "ixb.E_SIGNATURE"
    assert await _ask(fed, THA, sign_update(fresh, me)) == "ixb.E_RATE_LIMITED"
    assert await _ask(fed, "THA/IMMIGRATION", sign_update(fresh, me)) == "ixb.E_UNAUTHORISED"
    done = await run_ixb(
        "hub",
        "agency",
        "revoke",
        "THA/IMMIGRATION",
        "--reason",
        "test",
        "--config",
        str(fed.deployment.hub_config("THA")),
    )
    assert done.returncode == 0, done.stderr
    imm = load_identity_for(load_profile(fed.deployment.profile("THA/IMMIGRATION")), PASSPHRASE)
    update = KeyUpdate(
        v=1, agency="THA/IMMIGRATION", encryption_key=fresh.encryption_key, created=wall_ms()
    )
    assert await _ask(fed, "THA/IMMIGRATION", sign_update(update, imm)) == "ixb.E_REVOKED"


def _audited(fed: Federation) -> None:
    """The accepted update is in THA's audit log once, naming the agency as actor."""
    hub = fed.hubs["THA"].hub
    # the accepted update is in THA's audit log, naming the agency
    changes = [
        wire.decode(e.data, AuditEntry, "entry")
        for e in hub.audit_log.search(AuditQuery(event="policy_changed"), limit=50)
    ]
    ours = [c for c in changes if c.actor == f"agency:{THA}"]
    assert len(ours) == 1 and "encryption key rotated by the agency" in (ours[0].detail or "")


async def test_rotate_encryption_only_by_hand(tmp_path: Path) -> None:
    async with running_federation(tmp_path) as fed:
        path = str(fed.deployment.profile(MYS))
        entry = fed.hubs["MYS"].hub.keys.entry(fed.principal(MYS))
        before, signing = entry.encryption_key, entry.signing_key
        done = await run_ixb("keys", "rotate", "--encryption-only", "--profile", path)
        assert done.returncode == 0, done.stderr
        assert "listed by the hub" in done.stdout
        after = fed.hubs["MYS"].hub.keys.entry(fed.principal(MYS)).encryption_key
        assert after != before
        identity, history, _ = open_keyfile_history(
            fed.deployment.key_file(fed.principal(MYS)).read_bytes(), PASSPHRASE
        )
        assert identity.encryption is not None and identity.encryption.public == after
        assert [r.key.public for r in history.retired] == [before]
        # the signing key is untouched: no operator step
        assert identity.signing.public == signing
        assert fed.hubs["MYS"].hub.keys.entry(fed.principal(MYS)).signing_key == signing
        again = await run_ixb("keys", "rotate", "--encryption-only", "--profile", path)
        assert again.returncode != 0
        last_line = again.stderr.strip().splitlines()[-1]
        assert last_line.startswith("error ixb.E_RATE_LIMITED:"), again.stderr
        assert "Traceback" not in again.stderr
        # the key made for the refused update waits, unlisted; the listed one is kept
        identity, history, _ = open_keyfile_history(
            fed.deployment.key_file(fed.principal(MYS)).read_bytes(), PASSPHRASE
        )
        assert identity.encryption is not None and identity.encryption.public != after
        assert after in {r.key.public for r in history.retired}
        await _foreign_key_is_an_alarm(fed)


async def _foreign_key_is_an_alarm(fed: Federation) -> None:
    """Someone with MYS's signing key lists a key of theirs: MYS's client says so, loudly,
    and neither rotates nor destroys anything."""
    hub = fed.hubs["MYS"].hub
    hub.key_update_interval_ms = 0  # (10 min by default) for this test only
    profile = load_profile(fed.deployment.profile(MYS))
    key_file = open_key_file(profile, PASSPHRASE, wall_ms())
    theirs = Identity.generate(fed.principal(MYS)).public().encryption or b""
    update = KeyUpdate(v=1, agency=MYS, encryption_key=theirs, created=wall_ms())
    assert hub.nc is not None
    reply = await hub.nc.request(
        subjects.key_update(fed.principal(MYS)),
        sign_update(update, key_file.state.identity),
        timeout=10,
    )
    assert decode_answer(bytes(reply.data)).code is None
    before = fed.deployment.key_file(fed.principal(MYS)).read_bytes()
    client = await AgencyClient.connect(profile, key_file.state.identity, key_file=key_file)
    fed.clients.append(client)
    assert client.keys.entry(client.principal).encryption_key == theirs
    with structlog.testing.capture_logs() as logs:
        await client.maintain_keys()
    assert [e for e in logs if e["event"] == "encryption_key_unknown"], logs
    assert fed.deployment.key_file(fed.principal(MYS)).read_bytes() == before
