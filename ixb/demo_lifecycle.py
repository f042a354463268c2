"""The demo's key lifecycle, on the running federation with no restart: a new agency enrols,
an agency rotates its keys, the new agency's stolen laptop is revoked.

Every step is the command an agency or an operator types (``ixb agency enroll``,
``ixb hub agency approve|rotate|revoke``, ``ixb keys rotate``), run as its own
process; the hubs apply each change within a second, and the demo shows it
taking effect at all three hubs (docs/operations/keys.md is the walkthrough).
"""

from __future__ import annotations

import asyncio
import contextlib

from agency_client.sdk import Incoming
from ixb.demo_script import Script, expect_rejection, since_ms
from protocols.errors import IxbError
from protocols.examples import example_bodies
from protocols.handling import HandlingCode
from protocols.identifiers import parse_agency
from protocols.keys import KeyAlg, fingerprint, key_id
from protocols.messages import Body
from transport.clock import wall_ms

NEW_AGENCY = "MYS/MMEA"
"""Malaysia's maritime enforcement agency, enrolled during the demo (then revoked)."""
ROTATING = "THA/DSI-ATHD"
VIEWERS = ("THA/DSI-ATHD", "MYS/RMP-ATIPSOM", "MMR/MOHA-ATTU")
"""One agency per country: what its own hub serves is what that hub holds in force."""
REVOCATION_WAIT_S = 10.0


async def lifecycle(s: Script) -> None:
    alert = example_bodies(wall_ms())["alert"]
    await enrol(s, alert)
    await rotate(s, alert)
    await revoke(s, alert)


async def enrol(s: Script, alert: Body) -> None:
    d = s.deployment
    s.say(f"ENROL  {NEW_AGENCY}: keys made on its own machine, a signed request, MYS approves")
    out = d.base / "enrolled"
    await s.ixb_ok(
        "agency enroll",
        "agency", "enroll", "--agency", NEW_AGENCY,
        "--server", d.plan.client_url("MYS"),
        "--out", str(out),
        "--federation", str(d.base / "federation.toml"),
        "--nats-ca-file", str(d.ca_file),
    )  # fmt: skip
    request = out / "MYS-MMEA.request"
    approved = await s.ixb_ok(
        "hub agency approve",
        "hub", "agency", "approve", str(request), "--role", "trafficking_unit",
        "--config", str(d.hub_config("MYS")),
        "--nats-plan", str(d.base / "plan.json"),  # MYS's server reloads (its pid_file)
    )  # fmt: skip
    lines = approved.strip().splitlines()
    for line in lines[:1] + [x for x in lines if "NATS user added" in x]:
        s.say(f"       {line}")
    await s.connect(NEW_AGENCY, out / "MYS-MMEA.toml")
    msg_id, start = await s.send(NEW_AGENCY, alert, ["THA/DSI-ATHD"], handling=HandlingCode.H1)
    got = await s.next_message("THA/DSI-ATHD", "alert")
    s.say(f"       its first alert delivered to THA/DSI-ATHD after {since_ms(start)}")
    s.check(got.header.id == msg_id, "the enrolled agency's alert delivered")


async def rotate(s: Script, alert: Body) -> None:
    d = s.deployment
    s.say(f"ROTATE  {ROTATING} makes new keys; THA's operator lists them; traffic goes on")
    old = s.clients[ROTATING].identity.public()
    request = d.base / "THA-DSI-ATHD.rotate"
    await s.ixb_ok(
        "keys rotate",
        "keys", "rotate", "--profile", str(d.profile(ROTATING)), "--out", str(request),
    )  # fmt: skip
    applied = await s.ixb_ok(
        "hub agency rotate",
        "hub", "agency", "rotate", ROTATING, "--request", str(request),
        "--config", str(d.hub_config("THA")),
    )  # fmt: skip
    for line in applied.strip().splitlines()[:1]:
        s.say(f"       {line}")
    # the agency's process restarts with both key sets, as after any key change
    await s.disconnect(ROTATING)
    await s.connect(ROTATING, d.profile(ROTATING))
    new = s.clients[ROTATING].identity.public()
    s.say(
        f"       signing key {fingerprint(KeyAlg.ED25519, old.signing)} → "
        f"{fingerprint(KeyAlg.ED25519, new.signing)}"
        " (the old one stays valid 24 h, for messages in flight)"
    )
    receiver = await s.client("MYS/RMP-ATIPSOM")
    receiver.directory_refresh_s = 0.0  # MYS's officer sees THA's new keys at once
    msg_id, start = await s.send(ROTATING, alert, ["MYS/RMP-ATIPSOM"], handling=HandlingCode.H1)
    got = await s.next_message("MYS/RMP-ATIPSOM", "alert")
    by_new = new.signing != old.signing and got.header.sender_key == key_id(
        KeyAlg.ED25519, new.signing
    )
    s.say(
        f"       alert signed with the new key, verified at MYS after {since_ms(start)}"
        if by_new
        else "       alert verified at MYS, but signed with the old key"
    )
    s.check(got.header.id == msg_id and by_new, "an alert signed with the rotated key")


async def revoke(s: Script, alert: Body) -> None:
    d = s.deployment
    s.say(f"REVOKE  {NEW_AGENCY}'s laptop is stolen: MYS's operator revokes it")
    agency = parse_agency(NEW_AGENCY)
    viewers = {viewer.split("/")[0]: await s.client(viewer) for viewer in VIEWERS}
    in_force: dict[str, int] = {}  # country → when its hub first served the revoked entry

    async def watch() -> None:
        """Each country's agency asks its own hub, every 50 ms, for MYS's directory."""
        while len(in_force) < len(viewers):
            for country, client in viewers.items():
                if country in in_force:
                    continue
                with contextlib.suppress(IxbError):
                    await client.refresh_directories(timeout=2.0)
                    if client.keys.entry(agency).revoked is not None:
                        in_force[country] = wall_ms()
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    out = await s.ixb_ok(
        "hub agency revoke",
        "hub", "agency", "revoke", NEW_AGENCY, "--reason", "laptop stolen",
        "--config", str(d.hub_config("MYS")),
    )  # fmt: skip
    for line in out.strip().splitlines()[:1]:
        s.say(f"       {line}")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watcher, REVOCATION_WAIT_S)
    revoked = viewers["MYS"].keys.entry(agency).revoked
    for country, at in sorted(in_force.items(), key=lambda kv: kv[1]):
        took = at - revoked.at if revoked is not None else -1
        s.say(f"       in force at the {country} hub {took} ms after the revocation time")
    missing = sorted(set(viewers) - set(in_force))
    s.check(not missing, f"revocation in force at every hub (not at {missing})")
    msg_id, _ = await s.send(NEW_AGENCY, alert, ["THA/DSI-ATHD"], handling=HandlingCode.H1)
    await expect_rejection(s, NEW_AGENCY, msg_id, "ixb.E_REVOKED", "its next alert")
    received = [
        item
        for item in await (await s.client("THA/DSI-ATHD")).fetch(timeout=1.0)
        if isinstance(item, Incoming) and item.header.id == msg_id
    ]
    s.check(not received, "nothing from the revoked agency delivered")
    await s.disconnect(NEW_AGENCY)
