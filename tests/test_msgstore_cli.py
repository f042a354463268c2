"""Reading no longer destroys: the officer's inbox, show and export, as typed, against a
running federation (real nats-servers, the CLI as a subprocess)."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocols.identifiers import format_message_id
from protocols.limits import MAX_ATTACHMENT_BYTES
from protocols.messages import Alert, AlertCategory, Attachment, InfoGrade, SourceGrade
from tests.federation import PASSPHRASE, Federation, running_federation
from tests.test_cli_json import assert_times_iso

SENDER = "THA/DSI-ATHD"
OFFICER = "MYS/RMP-ATIPSOM"
GRADED = ("--category", "trafficking", "--source-grade", "B", "--info-grade", "2")


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with running_federation(tmp_path) as federation:
        yield federation


async def ixb(
    profile: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IXB_PASSPHRASE": PASSPHRASE, "IXB_PROFILE": str(profile)}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ixb", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


async def ixb_into_closed_pipe(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ixb ARGS`` whose stdout is a pipe nobody reads any more (a shell's ``| head``)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "IXB_PASSPHRASE": PASSPHRASE, "IXB_PROFILE": str(profile)}
    try:
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "ixb", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


async def send(fed: Federation, *extra: str, stdin: str | None = None) -> str:
    sent = await ixb(
        fed.deployment.profile(SENDER),
        "send",
        "alert",
        "--json",
        "--to",
        OFFICER,
        "--title",
        "EXAMPLE boat sighted",
        *GRADED,
        *extra,
        stdin=stdin,
    )
    return str(json.loads(ok(sent))["id"])


async def test_received_messages_survive_the_inbox(fed: Federation, tmp_path: Path) -> None:
    officer = fed.deployment.profile(OFFICER)
    narrative = "EXAMPLE narrative from stdin\nsecond line: 12 persons on board"
    first = await send(fed, "--text-file", "-", "--case", "THA-1", stdin=narrative)
    text_file = tmp_path / "note.txt"
    text_file.write_text("EXAMPLE follow-up from a file", encoding="utf-8")
    second = await send(fed, "--text-file", str(text_file), "--case", "THA-1")

    listed: list[dict[str, object]] = []
    deadline = asyncio.get_running_loop().time() + 30
    while len(listed) < 2:
        assert asyncio.get_running_loop().time() < deadline, listed
        listed += json.loads(ok(await ixb(officer, "inbox", "--json", "--wait", "2")))["messages"]
    assert [m["id"] for m in listed] == [first, second]
    assert listed[0]["body"]["text"] == narrative  # type: ignore[index]
    assert ok(await ixb(officer, "inbox", "--wait", "0.5")).strip() == "inbox empty"

    # still there: --all, show (with its thread by case ref), export
    stored = json.loads(ok(await ixb(officer, "inbox", "--all", "--json", "--wait", "0.5")))
    assert [m["id"] for m in stored["messages"]] == [first, second]
    shown = json.loads(ok(await ixb(officer, "show", first, "--json")))
    assert shown["body"]["text"] == narrative and shown["case_ref"] == "THA-1"
    assert shown["via"] == ["THA/HUB", "MYS/HUB"]
    assert [t["id"] for t in shown["thread"]] == [second]
    human = ok(await ixb(officer, "show", second))
    assert "EXAMPLE follow-up from a file" in human and f"id {first}" in human

    exported = json.loads(ok(await ixb(officer, "export", "--format", "json")))
    assert [(m["id"], m["body"]["text"]) for m in exported] == [
        (first, narrative),
        (second, "EXAMPLE follow-up from a file"),
    ]
    out = tmp_path / "export.csv"
    assert "exported 2 messages" in ok(
        await ixb(officer, "export", "--format", "csv", "--out", str(out))
    )
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [(r["id"], r["from"], r["case_ref"], r["text"]) for r in rows] == [
        (first, SENDER, "THA-1", narrative),
        (second, SENDER, "THA-1", "EXAMPLE follow-up from a file"),
    ]
    again = await ixb(officer, "export", "--format", "csv", "--out", str(out))
    assert again.returncode == 2 and again.stderr.startswith("error ixb.E_USAGE: ")

    # a reader that goes away (`ixb inbox --all | head`): quiet, not "lost the connection"
    closed = await ixb_into_closed_pipe(officer, "inbox", "--all", "--wait", "0.5")
    assert (closed.returncode, closed.stderr) == (141, "")

    # --since filters (ISO 8601, UTC)
    assert json.loads(ok(await ixb(officer, "export", "--since", "2999-01-01"))) == []
    past = json.loads(ok(await ixb(officer, "inbox", "--since", "2020-01-01T00:00", "--json")))
    assert len(past["messages"]) == 2 and past["refused"] == []
    assert_times_iso([past, shown])  # created, received_at, receipts: ISO 8601 UTC
    bad = await ixb(officer, "inbox", "--since", "last tuesday")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("error ixb.E_USAGE: --since")

    # the store copied without the key file: metadata only
    copy = tmp_path / "copy"
    copy.mkdir()
    raw = tomllib.loads(officer.read_text(encoding="utf-8"))
    shutil.copy(officer.with_name("MYS-RMP-ATIPSOM.state"), copy / "MYS-RMP-ATIPSOM.state")
    profile_copy = copy / "profile.toml"
    profile_copy.write_text(
        officer.read_text(encoding="utf-8").replace(
            json.dumps(raw["agency"]["key_file"]), json.dumps("absent.key")
        ),
        encoding="utf-8",
    )
    stolen = json.loads(ok(await ixb(profile_copy, "show", first, "--json")))
    assert (stolen["from"], stolen["case_ref"], stolen["content"]) == (SENDER, "THA-1", "locked")
    assert stolen["body"] is None
    assert narrative.encode() not in (copy / "MYS-RMP-ATIPSOM.state").read_bytes()
    assert "content sealed" in ok(await ixb(profile_copy, "show", first))


async def test_text_file_errors_are_one_line(fed: Federation, tmp_path: Path) -> None:
    sender = fed.deployment.profile(SENDER)
    base = ("send", "alert", "--to", OFFICER, "--title", "EXAMPLE", *GRADED)
    missing = await ixb(sender, *base, "--text-file", str(tmp_path / "absent.txt"))
    assert missing.returncode == 2 and missing.stderr.startswith("error ixb.E_IO: ")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    not_text = await ixb(sender, *base, "--text-file", str(binary))
    assert not_text.returncode == 2 and not_text.stderr.startswith("error ixb.E_USAGE: ")
    huge = await ixb(sender, *base, "--text-file", "-", stdin="x" * (32 * 1024 + 1))
    assert huge.returncode == 2 and "more than 32768 bytes" in huge.stderr
    for result in (missing, not_text, huge):
        assert result.stderr.count("\n") == 1, result.stderr


async def test_attachments_round_trip_and_are_saved_safely(fed: Federation, tmp_path: Path) -> None:
    officer = fed.deployment.profile(OFFICER)
    photo = tmp_path / "deck photo.jpg"
    photo.write_bytes(os.urandom(200_000))
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(b"name,age\nEXAMPLE,16\n")
    sent = await ixb(
        fed.deployment.profile(SENDER),
        "send",
        "alert",
        "--to",
        OFFICER,
        "--title",
        "EXAMPLE",
        *GRADED,
        "--text",
        "see attached",
        "--attach",
        str(photo),
        "--attach",
        str(manifest),
    )
    assert f"sha256 {hashlib.sha256(photo.read_bytes()).hexdigest()}" in ok(sent)
    msg_id = ok(sent).split()[2]

    # a sender-chosen name that tries to leave the directory (sent through the SDK)
    client = await fed.client(SENDER)
    evil = await client.send(
        Alert(
            category=AlertCategory.OTHER,
            title="EXAMPLE",
            text="EXAMPLE",
            source_grade=SourceGrade.X,
            info_grade=InfoGrade.UNCORROBORATED,
            attachments=(Attachment.of("../../x", b"EXAMPLE payload"),),
        ),
        [OFFICER],
    )
    ids: list[str] = []
    deadline = asyncio.get_running_loop().time() + 30
    while len(ids) < 2:
        assert asyncio.get_running_loop().time() < deadline, ids
        ids += [m["id"] for m in json.loads(ok(await ixb(officer, "inbox", "--json")))["messages"]]

    shown = json.loads(ok(await ixb(officer, "show", msg_id, "--json")))
    assert shown["body"]["attachments"] == [
        {"name": "deck photo.jpg", "size": 200_000, "sha256": _sha(photo.read_bytes())},
        {"name": "manifest.csv", "size": 20, "sha256": _sha(manifest.read_bytes())},
    ]
    out = tmp_path / "saved" / "inner"
    saving = ok(await ixb(officer, "show", msg_id, "--save-attachments", str(out)))
    assert "checked" in saving
    assert (out / "deck_photo.jpg").read_bytes() == photo.read_bytes()
    assert (out / "manifest.csv").read_bytes() == manifest.read_bytes()
    again = json.loads(
        ok(await ixb(officer, "show", msg_id, "--json", "--save-attachments", str(out)))
    )
    assert [Path(f["path"]).name for f in again["saved"]] == ["deck_photo-1.jpg", "manifest-1.csv"]
    assert (out / "manifest.csv").read_bytes() == manifest.read_bytes()  # never overwritten

    evil_id = format_message_id(evil)
    ok(await ixb(officer, "show", evil_id, "--save-attachments", str(out)))
    assert (out / "x").read_bytes() == b"EXAMPLE payload"
    assert not (tmp_path / "x").exists() and not (tmp_path / "saved" / "x").exists()


async def test_an_oversize_attachment_is_refused_in_one_line(
    fed: Federation, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(MAX_ATTACHMENT_BYTES + 1))
    refused = await ixb(
        fed.deployment.profile(SENDER),
        "send",
        "alert",
        "--to",
        OFFICER,
        "--title",
        "EXAMPLE",
        *GRADED,
        "--text",
        "t",
        "--attach",
        str(big),
    )
    assert refused.returncode == 2
    assert refused.stderr == f"error ixb.E_USAGE: --attach {big}: larger than 262144 bytes\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
