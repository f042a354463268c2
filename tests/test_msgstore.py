"""The agency's local message store: real SQLite files, real libsodium."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agency_client.commands import safe_file_name
from agency_client.keystore import load_identity
from agency_client.msgstore import MessageStore, store_path
from agency_client.profile import load_profile
from agency_client.sdk import previous_key_file
from protocols.envelope import Header
from protocols.handling import HandlingCode, Priority
from protocols.identifiers import format_message_id, hub_of, new_message_id, parse_agency
from protocols.keys import Identity
from protocols.limits import MS_PER_DAY
from protocols.messages import Alert, AlertCategory, InfoGrade, SourceGrade
from tests.strategies import alerts

NOW = 1_800_000_000_000
ME = parse_agency("MYS/RMP-ATIPSOM")
SENDER = "THA/DSI-ATHD"


def alert(text: str = "EXAMPLE boat sighted off Langkawi") -> Alert:
    return Alert(
        category=AlertCategory.TRAFFICKING,
        title="EXAMPLE",
        text=text,
        source_grade=SourceGrade.B,
        info_grade=InfoGrade.KNOWN_TO_SOURCE,
    )


def header(created: int, *, case: str | None = None, reply_to: bytes | None = None) -> Header:
    return Header(
        id=new_message_id(created, os.urandom(10)),
        type="alert",
        sender=SENDER,
        sender_key=b"\x00" * 16,
        recipients=[str(ME)],
        created=created,
        expires=created + 7 * MS_PER_DAY,
        handling=HandlingCode.H2,
        priority=Priority.URGENT,
        case_ref=case,
        in_reply_to=reply_to,
    )


def keep(store: MessageStore, h: Header, received_at: int, text: str = "EXAMPLE") -> bool:
    return store.keep(
        header=h, body=alert(text), via=[hub_of("THA"), hub_of("MYS")], received_at=received_at
    )


@pytest.fixture
def me() -> Identity:
    return Identity.generate(ME)


def test_stored_once_and_read_back(tmp_path: Path, me: Identity) -> None:
    path = tmp_path / "MYS-RMP-ATIPSOM.state"
    store = MessageStore(path, [me], content_days=90, now=NOW)
    h = header(NOW, case="THA-1")
    assert keep(store, h, NOW) is True
    assert keep(store, h, NOW + 5) is False  # a redelivery, recognised by (sender, id)
    store.close()
    assert path.stat().st_mode & 0o777 == 0o600  # metadata is in the clear: owner only
    again = MessageStore(path, [me], content_days=90, now=NOW)
    (m,) = again.get(h.message_id)
    assert (m.sender, m.type, m.case_ref, m.handling, m.priority) == (
        SENDER,
        "alert",
        "THA-1",
        "H2",
        "urgent",
    )
    assert m.via == ("THA/HUB", "MYS/HUB") and m.content == "ok"
    assert m.body is not None and m.body["text"] == "EXAMPLE"
    assert [x.id for x in again.unseen(10)] == [h.message_id]
    again.mark_seen([m])
    assert again.unseen(10) == [] and len(again.since(0)) == 1


def test_content_is_not_in_the_file_in_the_clear(tmp_path: Path, me: Identity) -> None:
    path = tmp_path / "s.state"
    store = MessageStore(path, [me], content_days=90, now=NOW)
    keep(store, header(NOW), NOW, text="EXAMPLE-SECRET-NARRATIVE")
    store.close()
    assert b"EXAMPLE-SECRET-NARRATIVE" not in path.read_bytes()


def test_a_copy_without_the_key_shows_metadata_only(tmp_path: Path, me: Identity) -> None:
    path = tmp_path / "s.state"
    store = MessageStore(path, [me], content_days=90, now=NOW)
    h = header(NOW, case="THA-9")
    keep(store, h, NOW)
    store.close()
    stolen = tmp_path / "stolen.state"
    shutil.copy(path, stolen)
    for keys in ([], [Identity.generate(ME)]):  # no key file, or another key file
        copy = MessageStore(stolen, keys, content_days=90, now=NOW)
        (m,) = copy.get(h.message_id)
        assert (m.content, m.body, m.case_ref, m.sender) == ("locked", None, "THA-9", SENDER)
        copy.close()


def test_content_from_another_row_does_not_open(tmp_path: Path, me: Identity) -> None:
    """Swapping sealed content between rows in the file is noticed, not shown."""
    path = tmp_path / "s.state"
    store = MessageStore(path, [me], content_days=90, now=NOW)
    a, b = header(NOW), header(NOW + 1)
    keep(store, a, NOW, "A")
    keep(store, b, NOW, "B")
    store.close()
    db = sqlite3.connect(path)
    with db:
        (sealed,) = db.execute("SELECT content FROM messages WHERE id = ?", (a.message_id,))
        db.execute("UPDATE messages SET content = ? WHERE id = ?", (sealed[0], b.message_id))
    db.close()
    store = MessageStore(path, [me], content_days=90, now=NOW)
    (m,) = store.get(b.message_id)
    assert m.content == "locked"


def test_retention_drops_content_and_keeps_metadata(tmp_path: Path, me: Identity) -> None:
    path = tmp_path / "s.state"
    store = MessageStore(path, [me], content_days=30, now=NOW)
    old, new = header(NOW - 40 * MS_PER_DAY), header(NOW - MS_PER_DAY)
    keep(store, old, NOW - 40 * MS_PER_DAY, "OLD-NARRATIVE")
    keep(store, new, NOW - MS_PER_DAY)
    store.close()
    sealed = _sealed(path, old.message_id)
    assert sealed in path.read_bytes()
    forever = MessageStore(path, [me], content_days=0, now=NOW)  # 0: nothing dropped
    assert forever.get(old.message_id)[0].content == "ok"
    forever.close()
    store = MessageStore(path, [me], content_days=30, now=NOW)  # pruned on open
    (o,) = store.get(old.message_id)
    assert (o.content, o.body, o.sender, o.type) == ("expired", None, SENDER, "alert")
    assert store.get(new.message_id)[0].content == "ok"
    store.close()
    assert sealed not in path.read_bytes()  # overwritten (secure_delete), not just unlinked


def _sealed(path: Path, msg_id: str) -> bytes:
    db = sqlite3.connect(path)
    (row,) = db.execute("SELECT content FROM messages WHERE id = ?", (msg_id,))
    db.close()
    return bytes(row[0])


def test_since_and_thread(tmp_path: Path, me: Identity) -> None:
    store = MessageStore(tmp_path / "s.state", [me], content_days=90, now=NOW)
    first = header(NOW - 10 * MS_PER_DAY, case="THA-7")
    same_case = header(NOW - 2 * MS_PER_DAY, case="THA-7")
    other = header(NOW - MS_PER_DAY, case="THA-8")
    for h in (first, same_case, other):
        keep(store, h, h.created)
    assert [m.id for m in store.since(NOW - 3 * MS_PER_DAY)] == [
        same_case.message_id,
        other.message_id,
    ]
    (m,) = store.get(first.message_id)
    assert [t.id for t in store.thread(m)] == [same_case.message_id]


def test_content_sealed_under_a_replaced_signing_key_is_sealed_again(
    tmp_path: Path, me: Identity
) -> None:
    path = tmp_path / "s.state"
    store = MessageStore(path, [me], content_days=90, now=NOW)
    h = header(NOW)
    keep(store, h, NOW)
    store.close()
    rotated = Identity.generate(ME)  # `ixb keys rotate`: the old keys kept as .previous
    MessageStore(path, [rotated, me], content_days=90, now=NOW).close()
    alone = MessageStore(path, [rotated], content_days=90, now=NOW)  # .previous gone
    assert alone.get(h.message_id)[0].content == "ok"


@settings(max_examples=40, deadline=None)
@given(body=alerts())
def test_content_round_trips(tmp_path_factory: pytest.TempPathFactory, body: Alert) -> None:
    me = Identity.generate(ME)
    store = MessageStore(tmp_path_factory.mktemp("rt") / "s.state", [me], content_days=90, now=NOW)
    h = header(NOW)
    store.keep(header=h, body=body, via=[], received_at=NOW)
    (m,) = store.get(format_message_id(h.id))
    assert msgspec.convert(m.body, Alert) == body  # the typed body, back from the store
    store.close()


@pytest.mark.parametrize(
    ("name", "saved"),
    [
        ("../../x", "x"),
        ("..\\..\\evil.exe", "evil.exe"),
        ("..", "attachment"),
        ("", "attachment"),
        (".bashrc", "bashrc"),
        ("/etc/passwd", "passwd"),
        ("a b/c d.txt", "c_d.txt"),
        ("rapport\u00e9.pdf", "rapport_.pdf"),
    ],
)
def test_safe_file_names(name: str, saved: str) -> None:
    assert safe_file_name(name) == saved


@given(name=st.text(max_size=300))
def test_a_saved_name_stays_in_its_directory(name: str) -> None:
    saved = safe_file_name(name)
    assert saved and "/" not in saved and "\\" not in saved and not saved.startswith(".")
    base = Path("/srv/out")
    assert (base / saved).resolve().parent == base


def test_keys_rotate_seals_the_store_again_before_the_old_key_can_go(tmp_path: Path) -> None:
    """`ixb keys rotate` re-seals stored content under the new signing key itself, so the
    content stays readable when the client later removes ``….key.previous``."""
    out = tmp_path / "unit"
    env = {**os.environ, "IXB_PASSPHRASE": "a long enough passphrase"}
    ixb = [sys.executable, "-m", "ixb"]
    enrol = [*ixb, "agency", "enroll", "--agency", str(ME), "--server", "nats://127.0.0.1:4222"]
    made = subprocess.run(
        [*enrol, "--out", str(out)],
        env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    profile = load_profile(out / "MYS-RMP-ATIPSOM.toml")
    key_file = out / "MYS-RMP-ATIPSOM.key"
    before = load_identity(key_file, env["IXB_PASSPHRASE"])
    store = MessageStore(store_path(profile), [before], content_days=90, now=NOW)
    h = header(NOW)
    keep(store, h, NOW, text="EXAMPLE kept across the rotation")
    store.close()
    rotated = subprocess.run(
        [*ixb, "keys", "rotate", "--profile", str(out / "MYS-RMP-ATIPSOM.toml")],
        env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    after = load_identity(key_file, env["IXB_PASSPHRASE"])
    assert after.signing.public != before.signing.public
    previous_key_file(key_file).unlink()  # what the client does once the hub lists the keys
    alone = MessageStore(store_path(profile), [after], content_days=90, now=NOW)
    (message,) = alone.get(h.message_id)
    assert message.content == "ok"
    assert "EXAMPLE kept across the rotation" in json.dumps(msgspec.to_builtins(message.body))
