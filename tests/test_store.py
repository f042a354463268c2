"""The hub's message store: batched decisions, routed marks, and what a restart finds."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from broker.store import HubStore
from protocols.envelope import Header, decode_envelope, seal_envelope
from protocols.examples import example_bodies
from protocols.identifiers import parse_agency
from protocols.keys import Identity
from protocols.limits import MS_PER_DAY

NOW = 1_795_000_000_000


def _headers(n: int) -> list[tuple[Header, bytes]]:
    sender = Identity.generate(parse_agency("THA/DSI-ATHD"))
    to = Identity.generate(parse_agency("MYS/RMP-ATIPSOM")).public()
    out: list[tuple[Header, bytes]] = []
    for _ in range(n):
        env = decode_envelope(
            seal_envelope(
                sender=sender,
                recipients=[to],
                body=example_bodies(NOW)["alert"],
                now_ms=NOW,
                ttl_ms=MS_PER_DAY,
            )
        )
        out.append((env.header, env.digest))
    return out


def test_batch_decisions_and_routed_marks_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite"
    store = HubStore(path)
    items = _headers(5)
    with store.transaction(durable=False):
        for header, digest in items:
            assert store.known(header.sender, header.id) is None
            store.remember(header, digest)
            assert store.known(header.sender, header.id) is not None
    store.mark_routed(*((h.sender, h.id) for h, _ in items[:3]))
    # another connection (as after a restart) sees what mark_routed returned for
    other = sqlite3.connect(path)
    routed = dict(other.execute("SELECT id, routed FROM messages").fetchall())
    other.close()
    assert sorted(routed.values()) == [0, 0, 1, 1, 1]
    store.close()
    again = HubStore(path)
    flags = [again.known(h.sender, h.id) for h, _ in items]
    assert [f.routed for f in flags if f is not None] == [True, True, True, False, False]
    again.close()


def test_a_failed_batch_leaves_nothing(tmp_path: Path) -> None:
    store = HubStore(tmp_path / "hub.sqlite")
    ((header, digest),) = _headers(1)
    with pytest.raises(RuntimeError), store.transaction(durable=False):
        store.remember(header, digest)
        raise RuntimeError("crash while deciding")
    assert store.known(header.sender, header.id) is None
    store.mark_routed(
        (header.sender, header.id)
    )  # the connection is usable again (no such row: no-op)
    store.close()


def test_commit_thread_and_decisions_do_not_interleave(tmp_path: Path) -> None:
    """The hub marks routed in a worker thread while the event loop decides the next batch."""
    store = HubStore(tmp_path / "hub.sqlite")
    items = _headers(40)
    for header, digest in items:
        store.remember(header, digest)
    errors: list[BaseException] = []

    def mark() -> None:
        try:
            for header, _ in items:
                store.mark_routed((header.sender, header.id))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=mark)
    thread.start()
    more = _headers(40)
    for header, digest in more:
        with store.transaction(durable=False):
            store.remember(header, digest)
    thread.join()
    assert errors == []
    assert all((k := store.known(h.sender, h.id)) is not None and k.routed for h, _ in items)
    assert all(store.known(h.sender, h.id) is not None for h, _ in more)
    store.close()


V1_MESSAGES = """
CREATE TABLE messages (
    id BLOB PRIMARY KEY, digest BLOB NOT NULL, type TEXT NOT NULL, sender TEXT NOT NULL,
    recipients TEXT NOT NULL, handling TEXT NOT NULL, restriction TEXT,
    created INTEGER NOT NULL, expires INTEGER NOT NULL, routed INTEGER NOT NULL DEFAULT 0,
    priority TEXT NOT NULL DEFAULT 'normal', in_reply_to BLOB, due INTEGER
);
CREATE INDEX messages_expires ON messages(expires);
CREATE INDEX messages_reply ON messages(in_reply_to);
CREATE INDEX messages_due ON messages(due) WHERE due IS NOT NULL;
"""


def test_a_version_1_store_is_migrated_to_ids_per_sender(tmp_path: Path) -> None:
    """A file whose messages were keyed by id alone opens with its rows, then keys per sender."""
    path = tmp_path / "hub.sqlite"
    (header, digest), (other, other_digest) = _headers(2)
    db = sqlite3.connect(path)
    db.executescript(V1_MESSAGES)
    db.execute(
        "INSERT INTO messages (id, digest, type, sender, recipients, handling, created, expires,"
        " routed) VALUES (?, ?, 'alert', ?, '[\"MYS/RMP-ATIPSOM\"]', 'H0', ?, ?, 1)",
        (header.id, digest, header.sender, NOW, NOW + MS_PER_DAY),
    )
    db.commit()
    db.close()
    store = HubStore(path)
    try:
        known = store.known(header.sender, header.id)
        assert known is not None and known.routed and known.digest == digest
        assert store.known("MMR/MOHA-ATTU", header.id) is None  # another sender: not this one
        with store.transaction():
            store.remember(other, other_digest)
        assert store.known(other.sender, other.id) is not None
    finally:
        store.close()
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == 2
    HubStore(path).close()  # a second open finds nothing to migrate


def test_prune_forgets_messages_expired_for_longer_than_kept(tmp_path: Path) -> None:
    store = HubStore(tmp_path / "hub.sqlite")
    try:
        items = _headers(3)
        with store.transaction():
            for header, digest in items:
                store.remember(header, digest)
        expires = items[0][0].expires
        assert store.prune(expires + 10, keep_ms=100) == 0  # expired, but kept a while longer
        assert store.prune(expires + 1_000, keep_ms=100) == 3
        assert all(store.known(h.sender, h.id) is None for h, _ in items)
    finally:
        store.close()


def test_the_directory_answer_is_an_index_or_one_directory(tmp_path: Path) -> None:
    """SPEC §8 directory.get: one directory per answer, so none outgrows a NATS message."""
    import msgspec

    from broker.hub import directory_answer

    store = HubStore(tmp_path / "hub.sqlite")
    try:
        store.save_directory("THA", 3, b"signed THA")
        store.save_directory("MYS", 7, b"signed MYS")
        assert msgspec.msgpack.decode(directory_answer(store, b"")) == {"THA": 3, "MYS": 7}
        assert directory_answer(store, b"MYS") == b"signed MYS"
        assert directory_answer(store, b"MMR") == b""  # a real country, no directory held
        for bad in (b"mys", b"XYZ", b"\xff\xfe", b"MYS/HUB"):
            assert directory_answer(store, bad) == b""
    finally:
        store.close()
