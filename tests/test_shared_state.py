"""What a hub process taking over reads from the KV bucket ``ixb_hub_state``: its encoding,
and the registry image it replaces its own with (broker.shared_state, broker.registry)."""

from __future__ import annotations

from pathlib import Path

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from broker import shared_state
from broker.registry import Registry, UserRow
from broker.shared_state import Directory, Shared, Witnessed, decode, encode

countries = st.sampled_from(["THA", "MYS", "MMR"])
ints = st.integers(0, 2**53)
shared = st.builds(
    Shared,
    st.dictionaries(countries, st.builds(Directory, ints, st.binary(max_size=64))),
    st.dictionaries(
        countries, st.builds(Witnessed, ints, st.binary(max_size=32), st.binary(max_size=64), ints)
    ),
    st.none() | st.builds(shared_state.Registry, ints, st.binary(max_size=64)),
)


@given(shared)
def test_what_is_written_is_read_back(value: Shared) -> None:
    assert decode(encode(value)) == value


@given(st.dictionaries(st.text(max_size=20), st.binary(max_size=40)))
def test_keys_and_values_of_another_shape_are_left_out(items: dict[str, bytes]) -> None:
    got = decode(items)  # never raises
    assert set(got.directories) <= {k.partition(".")[2] for k in items}


def test_a_value_of_the_wrong_types_is_left_out() -> None:
    wrong = {
        "directory.MYS": msgspec.msgpack.encode(("1", b"x")),
        "witnessed.MYS": msgspec.msgpack.encode((1, "root", b"note", 2)),
        "registry": msgspec.msgpack.encode((1, "not bytes")),
    }
    assert decode(wrong) == Shared({}, {}, None)


def test_a_registry_image_replaces_another_registry_and_the_old_one_is_kept(
    tmp_path: Path,
) -> None:
    active, standby = Registry(tmp_path / "a.sqlite"), Registry(tmp_path / "b.sqlite")
    try:
        with active.change("operator", 1, "user added") as db:
            Registry.put_user(db, UserRow("alice", "auditor", "hash-a"))
        with standby.change("someone", 2, "user added on the standby host") as db:
            Registry.put_user(db, UserRow("bob", "liaison", "hash-b"))
        standby.replace(active.snapshot(), tmp_path / "b.sqlite.before")
        assert set(standby.users()) == {"alice"}
        assert standby.last_seq() == active.last_seq() == 1
        # what it held is beside it, whole
        kept = Registry(tmp_path / "b.sqlite.before")
        try:
            assert set(kept.users()) == {"bob"}
        finally:
            kept.close()
        # and it goes on as a registry: the next change is the active one's next
        with standby.change("operator", 3, "user removed") as db:
            Registry.put_user(db, UserRow("alice", "auditor", "hash-a", removed=True))
        assert standby.last_seq() == 2
    finally:
        active.close()
        standby.close()
