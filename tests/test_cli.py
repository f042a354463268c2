"""The ``ixb`` command as a user runs it: real processes, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from protocols.keys import open_keyfile, read_nats_public
from protocols.mrz import build_td3

VECTORS = Path(__file__).resolve().parent.parent / "protocols" / "vectors"
TD3 = [
    "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<",
    "L898902C36UTO7408122F1204159ZE184226B<<<<<10",
]


def ixb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IXB_PASSPHRASE")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ixb", *args],
        capture_output=True,
        text=True,
        env=full_env,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error {code}: "), lines[0]
    assert "Traceback" not in result.stderr


def test_mrz_check_prints_the_document() -> None:
    result = ixb("mrz", "check", "--json", *TD3)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["document_number"] == "L898902C3"
    assert doc["issuing_state"] == "UTO"
    assert doc["surname"] == "ERIKSSON"
    assert doc["name"] == "ERIKSSON, ANNA MARIA"
    assert doc["expiry_date"] == "2012-04-15"
    assert doc["expired"] is True


def test_mrz_check_echoes_the_document_and_flags_expiry() -> None:
    expired = ixb("mrz", "check", *TD3)
    assert expired.returncode == 0, expired.stderr
    lines = expired.stdout.splitlines()
    assert lines[0] == "check digits valid (TD3)"
    assert lines[1].startswith(
        "passport L898902C3 (UTO) ERIKSSON, ANNA MARIA, EXPIRED 2012-04-15 ("
    )
    assert lines[1].endswith(" y ago)")
    # one argument holding both lines, as pasted from a reader
    valid = build_td3(
        issuing_state="MYS",
        surname="SAMPLE",
        given_names="SITI",
        document_number="A12345678",
        nationality="MYS",
        birth_date="900101",
        sex="F",
        expiry_date=(date.today() + timedelta(days=40)).strftime("%y%m%d"),
    )
    pasted = ixb("mrz", "check", "\n".join(valid) + "\n")
    assert pasted.returncode == 0, pasted.stderr
    assert "passport A12345678 (MYS) SAMPLE, SITI, expires " in pasted.stdout
    assert "(in 40 d)" in pasted.stdout or "(in 39 d)" in pasted.stdout  # UTC vs local day
    assert "EXPIRED" not in pasted.stdout


@pytest.mark.parametrize(
    ("lines", "code"),
    [
        ([TD3[0], TD3[1].replace("C36", "C37")], "ixb.E_MRZ_CHECK"),
        ([TD3[0], TD3[1][:-1]], "ixb.E_MRZ_FORMAT"),
        ([TD3[0].replace("UTO", "QQQ"), TD3[1]], "ixb.E_MRZ_COUNTRY"),
        (["hello"], "ixb.E_MRZ_FORMAT"),
    ],
    ids=["check-digit", "short-line", "country", "garbage"],
)
def test_mrz_check_errors_are_one_line(lines: list[str], code: str) -> None:
    assert_one_line_error(ixb("mrz", "check", *lines), code)


def test_keys_new_and_show(tmp_path: Path) -> None:
    out = tmp_path / "dsi.key"
    env = {"IXB_PASSPHRASE": "a long enough passphrase"}
    made = ixb(
        "keys",
        "new",
        "--agency",
        "THA/DSI-ATHD",
        "--out",
        str(out),
        "--kdf",
        "interactive",
        env=env,
    )
    assert made.returncode == 0, made.stderr
    assert "ed25519:" in made.stdout
    assert out.stat().st_mode & 0o777 == 0o600
    shown = ixb("keys", "show", str(out), "--json")
    assert shown.returncode == 0
    doc = json.loads(shown.stdout)
    assert doc["principal"] == "THA/DSI-ATHD"
    assert doc["fingerprints"]["signing"] in made.stdout
    again = ixb("keys", "new", "--agency", "THA/DSI-ATHD", "--out", str(out), env=env)
    assert_one_line_error(again, "ixb.E_IO")  # never overwrites a key file


def test_keys_new_hub_seals_its_nats_logins(tmp_path: Path) -> None:
    """A hub key file carries the nkeys of the hub's own NATS user and of each link; only
    their public halves are printed (for the server config)."""
    out = tmp_path / "tha-hub.key"
    env = {"IXB_PASSPHRASE": "a long enough passphrase"}
    args = ("keys", "new", "--hub", "THA/HUB", "--kdf", "interactive")
    made = ixb(*args, "--out", str(out), "--link", "MYS", "--link", "MMR", env=env)
    assert made.returncode == 0, made.stderr
    public = read_nats_public(out.read_bytes())
    assert sorted(public) == ["hub", "link/MMR", "link/MYS"]
    for key in public.values():
        assert key.startswith("U") and key in made.stdout
    opened = open_keyfile(out.read_bytes(), env["IXB_PASSPHRASE"])
    assert {label: seed.public for label, seed in opened.nats} == public
    for _, seed in opened.nats:  # never a seed on the screen
        assert seed.seed_str() not in made.stdout
    for bad, code in (
        (("--link", "THA"), "ixb.E_USAGE"),  # its own country
        (("--link", "Malaysia"), "ixb.E_IDENTIFIER"),
    ):
        assert_one_line_error(ixb(*args, "--out", str(tmp_path / "x.key"), *bad, env=env), code)
    agency = ("keys", "new", "--agency", "THA/DSI", "--out", str(tmp_path / "y.key"))
    assert_one_line_error(ixb(*agency, "--link", "MYS", env=env), "ixb.E_USAGE")


def test_passphrase_from_a_file_for_services_and_containers(tmp_path: Path) -> None:
    """``IXB_PASSPHRASE_FILE`` (a compose or systemd secret) stands for ``IXB_PASSPHRASE``;
    a file others may read, or both variables at once, is refused in one line."""
    secret = tmp_path / "passphrase"
    secret.write_text("a long enough passphrase\n")
    secret.chmod(0o600)
    out = tmp_path / "dsi.key"
    args = ("keys", "new", "--agency", "THA/DSI", "--kdf", "interactive")
    made = ixb(*args, "--out", str(out), env={"IXB_PASSPHRASE_FILE": str(secret)})
    assert made.returncode == 0, made.stderr
    assert open_keyfile(out.read_bytes(), "a long enough passphrase").principal.name == "DSI"
    both = {"IXB_PASSPHRASE_FILE": str(secret), "IXB_PASSPHRASE": "a long enough passphrase"}
    result = ixb(*args, "--out", str(tmp_path / "x.key"), env=both)
    assert_one_line_error(result, "ixb.E_CONFIG")
    assert "both set" in result.stderr
    secret.chmod(0o640)
    result = ixb(*args, "--out", str(tmp_path / "y.key"), env={"IXB_PASSPHRASE_FILE": str(secret)})
    assert_one_line_error(result, "ixb.E_CONFIG")
    assert "chmod 600" in result.stderr and "a long enough" not in result.stderr
    assert not (tmp_path / "x.key").exists() and not (tmp_path / "y.key").exists()


def test_keys_new_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "k")
    assert_one_line_error(
        ixb("keys", "new", "--agency", "THA/HUB", "--out", out, env={"IXB_PASSPHRASE": "x" * 20}),
        "ixb.E_IDENTIFIER",
    )
    assert_one_line_error(
        ixb("keys", "new", "--agency", "THA/DSI", "--out", out), "ixb.E_PASSPHRASE"
    )  # no terminal, no env
    assert_one_line_error(
        ixb("keys", "new", "--agency", "THA/DSI", "--out", out, env={"IXB_PASSPHRASE": "short"}),
        "ixb.E_PASSPHRASE",
    )
    assert_one_line_error(ixb("keys", "show", str(tmp_path / "missing")), "ixb.E_IO")
    assert_one_line_error(ixb("keys", "new", "--out", out), "ixb.E_USAGE")
    assert_one_line_error(ixb("nonsense"), "ixb.E_USAGE")


def test_envelope_inspect_shows_metadata_and_verifies() -> None:
    alert = str(VECTORS / "alert.ixb")
    keys = [
        "--key",
        str(VECTORS / "THA-DSI-ATHD.key"),
        "--key",
        str(VECTORS / "THA-HUB.key"),
        "--key",
        str(VECTORS / "MYS-HUB.key"),
    ]
    result = ixb("envelope", "inspect", alert, *keys, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["type"] == "alert"
    assert doc["sender"] == "THA/DSI-ATHD"
    assert doc["handling"] == "H2"
    for time in (doc["created"], doc["expires"], *(hop["at"] for hop in doc["hops"])):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", time), time  # ISO 8601 UTC
    assert doc["signature"].startswith("valid") and "every hop" in doc["signature"]
    assert doc["freshness"].startswith("ixb.E_EXPIRED")  # a 2026 vector
    vectors = json.loads((VECTORS / "envelopes.json").read_text())
    title = vectors["envelopes"][0]["body"]["title"]
    assert title not in result.stdout  # metadata only, never content

    unchecked = ixb("envelope", "inspect", alert)
    assert unchecked.returncode == 3
    assert "not checked" in unchecked.stdout


def test_envelope_inspect_failures(tmp_path: Path) -> None:
    data = bytearray((VECTORS / "alert.ixb").read_bytes())
    data[-200] ^= 1
    bad = tmp_path / "bad.ixb"
    bad.write_bytes(bytes(data))
    result = ixb("envelope", "inspect", str(bad), "--key", str(VECTORS / "THA-DSI-ATHD.key"))
    assert result.returncode == 2
    assert "FAILED ixb.E_SIGNATURE" in result.stdout
    garbage = tmp_path / "garbage.ixb"
    garbage.write_bytes(b"\x93\x01\x02")
    assert_one_line_error(ixb("envelope", "inspect", str(garbage)), "ixb.E_MALFORMED")


def test_demo_runs_every_step(tmp_path: Path) -> None:
    """The real three-country demo, as `make demo` runs it, with --once."""
    result = subprocess.run(
        [sys.executable, "-m", "ixb", "demo", "--once", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    steps = ("ALERT", "DOC CHECKS", "PERSON QUERY", "FOLLOW-UP", "MLA REQUEST", "OVERDUE")
    for step in (*steps, "REFUSALS", "ENROL", "ROTATE", "REVOKE"):
        assert step in out
    # every step a person takes is the command, shown with the acting agency's profile
    profiles = tmp_path / "demo" / "agencies"
    for line in (
        "$ ixb send alert --to MYS/RMP-ATIPSOM --to MMR/MOHA-ATTU --title … --text …",
        f"$ ixb inbox --wait 0.5 --json --profile {profiles / 'MMR-MOHA-ATTU.toml'}",
        f"$ ixb verify-doc --mrz … --checkpoint SADAO --json --profile {profiles}/THA-IMMIG",
        f"$ ixb queue list --json --profile {profiles / 'MYS-IMMIGRATION.toml'}",
        "$ ixb query person --to MMR/MOHA-ATTU --to MYS/RMP-ATIPSOM --surname SAMPLE",
        "$ ixb followup decide ",
        f"$ ixb mla list --json --profile {profiles / 'MYS-AGC.toml'}",
        f"$ ixb overdue --open --json --profile {profiles / 'THA-DSI-ATHD.toml'}",
        "$ ixb agency respond --unknown ask_human --profile ",
    ):
        assert line in out, line
    assert "read      signed by MMR/MOHA-ATTU, MYS/RMP-ATIPSOM" in out  # both recipients read it
    assert "answer: valid (automated)" in out
    assert "answer: reported_stolen (automated)" in out
    assert "record under review: queued at MYS/IMMIGRATION, due in 7 h" in out
    assert "a mistyped check digit: refused here, nothing sent: error ixb.E_MRZ" in out
    assert "THA/IMMIGRATION reads MYS's answer: valid (human, by Insp. " in out
    assert "a person MMR holds: HIT, reference MMR-" in out  # the queried country's own
    assert "MYS/RMP-ATIPSOM (no automated index): queued at MYS/RMP-ATIPSOM, due in " in out
    assert "a person it does not: no hit" in out
    assert "decision: approved by Insp. " in out and "decision: refused by Insp. " in out
    assert "refused here: error ixb.E_TRANSITION: MLA status: received cannot become" in out
    assert re.search(r"sent to MYS/AGC: in_execution, age \d+ s", out), out
    assert "H2 alert forwarded to MYS/IMMIGRATION (SDK): ixb.E_HANDLING" in out
    assert "person query from an immigration desk: error ixb.E_UNAUTHORISED" in out
    assert "naming a victim under H0: never sealed by THA/DSI-ATHD: error ixb.E_HANDLING" in out
    # the lifecycle on the running federation: a rotated key in use, a revocation everywhere
    assert "alert signed with the new key, verified at MYS" in out
    for country in ("THA", "MYS", "MMR"):
        assert f"in force at the {country} hub" in out
    assert "its next alert: ixb.E_REVOKED" in out
    assert "checks went as expected" in out
    assert "every connection TLS" in out


def test_agency_enroll_makes_keys_profile_and_a_signed_request(tmp_path: Path) -> None:
    out = tmp_path / "enrol"
    args = (
        "agency",
        "enroll",
        "--agency",
        "THA/DSI-ATHD",
        "--server",
        "nats://127.0.0.1:4222",
        "--out",
        str(out),
    )
    assert_one_line_error(ixb(*args), "ixb.E_PASSPHRASE")  # no passphrase, no terminal
    made = ixb(*args, env={"IXB_PASSPHRASE": "a long passphrase"})
    assert made.returncode == 0, made.stderr
    for name in ("THA-DSI-ATHD.key", "THA-DSI-ATHD.toml", "THA-DSI-ATHD.request"):
        assert (out / name).stat().st_mode & 0o777 == 0o600
    from agency_client.profile import load_profile
    from protocols.enrolment import verify_request

    profile = load_profile(out / "THA-DSI-ATHD.toml")
    assert str(profile.principal) == "THA/DSI-ATHD"
    assert profile.nats.user is None and profile.nats.password is None  # no secret in it
    request = verify_request((out / "THA-DSI-ATHD.request").read_bytes())
    assert request.server == "nats://127.0.0.1:4222" and request.nats_user == "agency-DSI-ATHD"
    assert request.nats_password_hash is None
    nkeys = json.loads((out / "THA-DSI-ATHD.key").read_text())["public"]["nats"]
    assert request.nats_nkey == nkeys["agency"] and f"nats       {nkeys['agency']}" in made.stdout
    identity = open_keyfile((out / "THA-DSI-ATHD.key").read_bytes(), "a long passphrase")
    seed = identity.nats_seed("agency")
    assert seed is not None and seed.public == request.nats_nkey
    for name in ("THA-DSI-ATHD.key", "THA-DSI-ATHD.toml", "THA-DSI-ATHD.request"):
        assert seed.seed_str() not in (out / name).read_text("latin-1")
    again = ixb(*args, env={"IXB_PASSPHRASE": "a long passphrase"})
    assert_one_line_error(again, "ixb.E_USAGE")  # never overwrites keys


def test_agency_enroll_records_the_nats_ca_file(tmp_path: Path) -> None:
    out = tmp_path / "enrol"
    made = ixb(
        "agency",
        "enroll",
        "--agency",
        "THA/DSI-ATHD",
        "--server",
        "tls://127.0.0.1:4222",
        "--nats-ca-file",
        str(tmp_path / "ca.pem"),
        "--out",
        str(out),
        env={"IXB_PASSPHRASE": "a long passphrase"},
    )
    assert made.returncode == 0, made.stderr
    from agency_client.profile import load_profile

    profile = load_profile(out / "THA-DSI-ATHD.toml")
    assert profile.nats.ca_file == str(tmp_path / "ca.pem")
    assert profile.nats_ca_file() == tmp_path / "ca.pem"
