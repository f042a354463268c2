"""Federation file versions: threshold signatures, the successor rule, where they are held.

The rules are SPEC §12 (Federation file versions); the cases an implementation
must agree on are vectors (protocols/vectors/federation.json, tests/test_vectors.py).
Here: the round trip, the rules one by one, the CLI as an operator runs it, and
a hub and an agency refusing a file at start.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agency_client.federation_state import adopt_federation as agency_adopt
from broker.audit.search import AuditQuery
from broker.cli import load_hub_parts
from broker.config import load_config
from broker.trust import adopt_federation
from ixb.deployment import create_deployment
from protocols.audit import decode_entry
from protocols.errors import IxbError
from protocols.federation import (
    FederationFile,
    FederationSignature,
    TrustAnchors,
    check_successor,
    parse_federation,
    parse_federation_file,
    propose,
    render_federation,
    render_federation_file,
    sign_version,
)
from protocols.identifiers import hub_of, parse_agency
from protocols.keys import Identity, SigningKeyPair, open_keyfile
from protocols.roles import Role
from tests.federation import PASSPHRASE as FED_PASSPHRASE
from tests.federation import running_federation
from tests.test_audit_federation import until
from tests.test_cli import assert_one_line_error, ixb

COUNTRIES = ("THA", "MYS", "MMR", "LAO", "KHM", "VNM", "IDN", "PHL")
HUBS = {c: Identity(hub_of(c), SigningKeyPair(bytes([i + 1]) * 32), None) for i, c in
        enumerate(COUNTRIES)}  # fmt: skip
PASSPHRASE = "federation test passphrase"


def v1(*countries: str, threshold: int = 0) -> FederationFile:
    members = countries or ("THA", "MYS", "MMR")
    return FederationFile(
        TrustAnchors("ixb-demo", {c: HUBS[c].signing.public for c in members}), 1, threshold
    )


def signed(fed: FederationFile, *signers: str) -> FederationFile:
    for country in signers:
        fed = sign_version(fed, HUBS[country])
    return fed


@st.composite
def federation_files(draw: st.DrawFn) -> FederationFile:
    members = draw(st.lists(st.sampled_from(COUNTRIES), min_size=1, unique=True))
    threshold = draw(st.integers(1, len(members)))
    version = draw(st.integers(1, 2**53 - 1))
    name = draw(st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9 ._-]{0,20}[A-Za-z0-9])?", fullmatch=True))
    sig = st.binary(min_size=64, max_size=64)
    sigs = draw(
        st.lists(st.builds(FederationSignature, st.sampled_from(COUNTRIES), sig), max_size=4)
    )
    trust = TrustAnchors(name, {c: HUBS[c].signing.public for c in members})
    return FederationFile(trust, version, threshold, tuple(sigs))


@settings(max_examples=60, deadline=None)
@given(federation_files())
def test_render_then_parse_is_the_identity(fed: FederationFile) -> None:
    again = parse_federation_file(render_federation_file(fed))
    assert again == fed
    assert again.body() == fed.body()
    assert render_federation_file(again) == render_federation_file(fed)


def test_a_file_without_version_is_version_1_with_a_majority_threshold() -> None:
    text = render_federation("ixb-demo", {c: HUBS[c].signing.public for c in COUNTRIES[:3]})
    fed = parse_federation_file(text)
    assert (fed.version, fed.threshold, fed.signatures) == (1, 2, ())
    assert parse_federation(text) == fed.trust
    assert (
        parse_federation_file(
            render_federation("x", {c: HUBS[c].signing.public for c in COUNTRIES[:4]})
        ).threshold
        == 3
    )


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        ("version = 2\nthreshold = 2", None),
        ("version = 0", "federation.version"),
        ('version = "2"', "federation.version"),
        ("threshold = 4", "federation.threshold"),
        ("threshold = 0", "federation.threshold"),
        ("threshold = true", "federation.threshold"),
    ],
)
def test_version_and_threshold_rules(edit: str, key: str | None) -> None:
    text = render_federation("ixb-demo", {c: HUBS[c].signing.public for c in COUNTRIES[:3]})
    text = text.replace('name = "ixb-demo"', f'name = "ixb-demo"\n{edit}')
    if key is None:
        assert parse_federation_file(text).version == 2
        return
    with pytest.raises(IxbError) as err:
        parse_federation_file(text)
    assert err.value.code == "ixb.E_CONFIG" and err.value.detail.startswith(key)


def test_signature_tables_are_checked() -> None:
    base = render_federation_file(v1()) + "\n[[signature]]\n"
    zeros = "00" * 64
    for table, where in [
        ('country = "THA"\nsig = "00"\n', "signature[0].sig"),
        (f'country = "XXX"\nsig = "{zeros}"\n', "signature[0].country"),
        (f'country = "THA"\nsig = "{zeros}"\nkey = "x"\n', "signature[0].key"),
    ]:
        with pytest.raises(IxbError) as err:
            parse_federation_file(base + table)
        assert err.value.detail.startswith(where), err.value.detail


def test_successor_rules() -> None:
    root = v1()
    v2 = propose(root, keys={"MYS": HUBS["LAO"].signing.public})
    assert check_successor(root, signed(v2, "THA", "MMR")).signers == ("MMR", "THA")
    # the signer whose key changes signs with the key of the version it replaces
    assert check_successor(root, signed(v2, "THA", "MYS")).signers == ("MYS", "THA")
    for bad, code in [
        (signed(v2, "THA"), "ixb.E_SIGNATURE"),
        (signed(v2, "THA", "LAO"), "ixb.E_SIGNATURE"),  # LAO's key is MYS's new one: not in v1
        (FederationFile(v2.trust, 2, 2, signed(v2, "THA").signatures * 3), "ixb.E_SIGNATURE"),
        (
            signed(propose(v2), "THA", "MMR")
            if False
            else signed(propose(propose(root, threshold=3), threshold=2), "THA", "MMR"),
            "ixb.E_CONFIG",
        ),
        (FederationFile(TrustAnchors("other", root.trust.hubs), 2), "ixb.E_CONFIG"),
    ]:
        with pytest.raises(IxbError) as err:
            check_successor(root, bad)
        assert err.value.code == code, bad
    held = signed(v2, "THA", "MMR")
    with pytest.raises(IxbError) as err:
        check_successor(held, root)
    assert err.value.code == "ixb.E_ROLLBACK"
    # a 3-of-3 federation: two signatures are not enough, whichever two
    strict = v1(threshold=3)
    with pytest.raises(IxbError):
        check_successor(strict, signed(propose(strict, remove=["MMR"], threshold=2), "THA", "MYS"))


def test_only_hub_keys_sign() -> None:
    agency = Identity.generate(parse_agency("THA/DSI-ATHD"))
    with pytest.raises(IxbError) as err:
        sign_version(v1(), agency)
    assert err.value.code == "ixb.E_USAGE"


def test_adopt_keeps_the_newest_and_refuses_rollback(tmp_path: Path) -> None:
    trust, src = tmp_path / "trust", tmp_path / "federation.toml"
    root = v1()
    v2 = signed(propose(root, threshold=3), "THA", "MYS")
    assert adopt_federation(trust, render_federation_file(root), src) == root
    assert adopt_federation(trust, render_federation_file(v2), src) == v2
    assert parse_federation_file((trust / "federation.toml").read_text()) == v2
    with pytest.raises(IxbError) as err:
        adopt_federation(trust, render_federation_file(root), src)
    assert err.value.code == "ixb.E_ROLLBACK" and str(src) in err.value.detail
    # the agency side holds it the same way
    state = tmp_path / "THA-DSI-ATHD.federation"
    assert agency_adopt(state, render_federation_file(root), src) == root
    assert agency_adopt(state, render_federation_file(v2), src) == v2
    with pytest.raises(IxbError) as err:
        agency_adopt(state, render_federation_file(root), src)
    assert err.value.code == "ixb.E_ROLLBACK"
    with pytest.raises(IxbError) as err:
        agency_adopt(state, render_federation_file(signed(propose(v2, threshold=1), "THA")), src)
    assert err.value.code == "ixb.E_SIGNATURE"


def test_cli_propose_sign_verify_and_a_hub_that_refuses_an_older_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = create_deployment(
        tmp_path / "dep",
        {"THA/DSI-ATHD": [Role.TRAFFICKING_UNIT], "MYS/RMP-ATIPSOM": [Role.TRAFFICKING_UNIT],
         "MMR/MOHA-ATTU": [Role.TRAFFICKING_UNIT]},
        passphrase=PASSPHRASE,
    )  # fmt: skip
    env = {"IXB_PASSPHRASE": PASSPHRASE}
    fed = dep.base / "federation.toml"
    original = fed.read_text()
    config = load_config(dep.hub_config("THA"))
    monkeypatch.setenv("IXB_PASSPHRASE", PASSPHRASE)
    load_hub_parts(config)  # first start: version 1 is the root, now held

    new_mys = tmp_path / "MYS-HUB-2.key"
    made = ixb("keys", "new", "--hub", "MYS/HUB", "--out", str(new_mys), "--kdf", "interactive",
               env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    v2 = tmp_path / "v2.toml"
    proposed = ixb("federation", "propose", "--current", str(fed), "--out", str(v2),
                   "--key", f"MYS={new_mys}")  # fmt: skip
    assert proposed.returncode == 0, proposed.stderr
    assert "change the key of MYS/HUB" in proposed.stdout
    assert_one_line_error(ixb("federation", "verify", str(v2), "--previous", str(fed)),
                          "ixb.E_SIGNATURE")  # fmt: skip
    for country in ("THA", "MMR"):
        key = dep.key_file(hub_of(country))
        done = ixb("federation", "sign", str(v2), "--key", str(key), env=env)
        assert done.returncode == 0, done.stderr
        assert "PRIVATE" not in done.stdout.upper() and "seed" not in done.stdout
    ok = ixb("federation", "verify", str(v2), "--previous", str(fed))
    assert ok.returncode == 0, ok.stderr
    assert "signed by MMR, THA (2 required)" in ok.stdout
    shown = ixb("federation", "show", str(v2))
    assert "version 2  threshold 2 of 3" in shown.stdout and "signed by  THA, MMR" in shown.stdout
    assert_one_line_error(ixb("federation", "verify", str(v2)), "ixb.E_USAGE")

    fed.write_text(v2.read_text())
    _identity, trust, _agencies = load_hub_parts(config)
    assert trust.hubs["MYS"] == open_keyfile(new_mys.read_bytes(), PASSPHRASE).signing.public
    # the operator puts the old file back (or an attacker does): refused, one line
    fed.write_text(original)
    run = subprocess.run(
        [sys.executable, "-m", "ixb", "hub", "run", "--config", str(dep.hub_config("THA"))],
        capture_output=True, text=True, env={**dep.env()}, timeout=60, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert_one_line_error(run, "ixb.E_ROLLBACK")
    assert "federation version 1 is older than version 2" in run.stderr


async def test_a_running_federation_installs_a_signed_version_by_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IXB_PASSPHRASE", FED_PASSPHRASE)
    async with running_federation(tmp_path / "fed") as fed:
        path = fed.deployment.base / "federation.toml"
        v1_text = path.read_text()
        current = parse_federation_file(v1_text)
        v2 = propose(current, threshold=3)
        for country in ("THA", "MYS"):
            key = fed.deployment.key_file(hub_of(country)).read_bytes()
            v2 = sign_version(v2, open_keyfile(key, FED_PASSPHRASE))
        path.write_text(render_federation_file(v2))
        await fed.stop_hub("MMR")
        mmr = await fed.start_hub("MMR")
        changed = [
            decode_entry(e.data).detail or ""
            for e in mmr.audit_log.search(AuditQuery(event="policy_changed"))
        ]
        assert any(
            d.startswith(f"federation v1 {current.digest()} → federation v2 {v2.digest()}")
            for d in changed
        ), changed
        # MMR tells its peers, which still run on version 1: they keep it for their operators
        offered = fed.deployment.base / "trust" / "THA" / "federation-offered-v2.toml"
        await until(offered.exists)
        assert parse_federation_file(offered.read_text()) == v2
        tha = fed.hubs["THA"].hub
        assert tha.metrics.counter_value("ixb_federation_offers_total", peer="MMR", result="newer")
        assert (
            parse_federation_file(
                (fed.deployment.base / "trust" / "THA" / "federation.toml").read_text()
            )
            == current
        )  # offered, not installed: that takes THA's operator and a restart
        # the old file put back: the hub does not start
        path.write_text(v1_text)
        await fed.stop_hub("MMR")
        with pytest.raises(IxbError) as err:
            await fed.start_hub("MMR")
        assert err.value.code == "ixb.E_ROLLBACK"
        # a version 3 signed by two hubs, now that version 2 asks for three: refused
        v3 = propose(v2, threshold=2)
        for country in ("THA", "MYS"):
            key = fed.deployment.key_file(hub_of(country)).read_bytes()
            v3 = sign_version(v3, open_keyfile(key, FED_PASSPHRASE))
        path.write_text(render_federation_file(v3))
        with pytest.raises(IxbError) as err:
            await fed.start_hub("MMR")
        assert err.value.code == "ixb.E_SIGNATURE"


def test_cli_refusals_are_one_line(tmp_path: Path) -> None:
    v1_path, v2_path = tmp_path / "v1.toml", tmp_path / "v2.toml"
    v1_path.write_text(render_federation_file(v1()))
    broken = tmp_path / "broken.toml"
    broken.write_text(render_federation_file(v1()).replace("threshold = 2", "threshold = 9"))
    assert_one_line_error(ixb("federation", "show", str(broken)), "ixb.E_CONFIG")
    assert_one_line_error(ixb("federation", "show", str(tmp_path / "none.toml")), "ixb.E_IO")
    assert_one_line_error(
        ixb("federation", "propose", "--current", str(v1_path), "--out", str(v2_path)),
        "ixb.E_USAGE",
    )
    assert_one_line_error(
        ixb("federation", "propose", "--current", str(v1_path), "--out", str(v2_path),
            "--add", "THA=" + "ab" * 32),
        "ixb.E_USAGE",
    )  # fmt: skip
    assert_one_line_error(
        ixb("federation", "propose", "--current", str(v1_path), "--out", str(v2_path),
            "--remove", "LAO"),
        "ixb.E_USAGE",
    )  # fmt: skip
    assert_one_line_error(
        ixb("federation", "propose", "--current", str(v1_path), "--out", str(v2_path),
            "--threshold", "4"),
        "ixb.E_CONFIG",
    )  # fmt: skip
    assert not v2_path.exists()
    key = tmp_path / "THA-HUB.key"
    env = {"IXB_PASSPHRASE": PASSPHRASE}
    made = ixb("keys", "new", "--hub", "THA/HUB", "--out", str(key), "--kdf", "interactive",
               env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert_one_line_error(
        ixb("federation", "sign", str(v1_path), "--key", str(key),
            env={"IXB_PASSPHRASE": "a wrong passphrase"}),
        "ixb.E_PASSPHRASE",
    )  # fmt: skip
    assert_one_line_error(ixb("federation", "sign", str(v1_path), "--key", str(key)),
                          "ixb.E_PASSPHRASE")  # fmt: skip
