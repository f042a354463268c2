"""Checkpoints, signed notes and cosignatures: vectors both ways, refusals, fork detection."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import merkle
from protocols.audit import AuditEntry, AuditEvent, encode_entry
from protocols.checkpoint import (
    MAX_NOTE_BYTES,
    MAX_NOTE_SIGNATURES,
    MAX_TREE_SIZE,
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    Checkpoint,
    NoteSignature,
    add_signatures,
    check_consistency,
    cosign,
    cosignature_for,
    cosignature_timestamp,
    log_origin,
    merge_notes,
    new_checkpoint,
    note_key_id,
    parse_checkpoint,
    parse_signature_lines,
    parse_signed_note,
    parse_verifier_key,
    sign_checkpoint,
    sign_note,
    verifier_key,
    verify_checkpoint,
    verify_cosignature,
    verify_note,
    witness_name,
)
from protocols.errors import (
    ERRORS_BY_CODE,
    CheckpointError,
    ForkError,
    IxbError,
    MerkleProofError,
    PeerError,
    SignatureError,
    TooLargeError,
    UnauthorisedError,
)
from protocols.fields import MAX_TIME_MS
from protocols.identifiers import hub_of, parse_agency
from protocols.keys import Identity, SigningKeyPair
from tests.gen_checkpoint import build_ixb

VECTORS = Path(__file__).resolve().parent.parent / "protocols" / "vectors"
DOC: dict[str, Any] = json.loads((VECTORS / "checkpoint.json").read_text())
PUB = DOC["published"]
IXB = DOC["ixb"]
FAST = settings(max_examples=100, deadline=None, database=None)


def _note(case: dict[str, Any]) -> bytes:
    if "note_hex" in case:
        return bytes.fromhex(case["note_hex"])
    return str(case["note"]).encode("utf-8")


def _go_signer_key(text: str) -> tuple[str, SigningKeyPair]:
    """Go's ``PRIVATE+KEY+<name>+<hash>+base64(0x01 ‖ seed)``; test-only, ixb keeps no such text."""
    priv, key, name, _hash, encoded = text.split("+", 4)
    assert (priv, key) == ("PRIVATE", "KEY")
    raw = base64.b64decode(encoded)
    assert raw[0] == SIG_ED25519
    return name, SigningKeyPair(raw[1:])


def _hub(cc: str) -> Identity:
    party = IXB["parties"][f"{cc}/HUB"]
    return Identity(hub_of(cc), SigningKeyPair(bytes.fromhex(party["signing_seed"])), None)


THA, MYS, MMR = _hub("THA"), _hub("MYS"), _hub("MMR")
LEAVES = [bytes.fromhex(e["encoding"]) for e in IXB["audit_entries"]]
T0 = 1_795_000_000_000


# --- published vectors -------------------------------------------------------------


def test_go_signed_note_both_directions() -> None:
    v = PUB["signed_notes"][0]
    name, key = _go_signer_key(v["signer_key"])
    text, note = v["text"].encode(), v["note"].encode()
    assert verifier_key(name, key.public) == v["verifier_key"]
    assert parse_verifier_key(v["verifier_key"]) == (name, SIG_ED25519, key.public)
    assert text + b"\n" + sign_note(text, name, key).line().encode() == note
    assert verify_note(note, name, key.public) == text


def test_go_note_with_two_signers_verifies_each_and_ignores_the_other() -> None:
    v = PUB["signed_notes"][1]
    note = v["note"].encode()
    body, sigs = parse_signed_note(note)
    assert body == v["text"].encode()
    assert [s.name for s in sigs] == ["PeterNeumann", "EnochRoot"]
    for vkey in v["verifier_keys"]:
        name, sig_type, public = parse_verifier_key(vkey)
        assert sig_type == SIG_ED25519
        assert verify_note(note, name, public) == body


def test_c2sp_note_text_ends_at_the_last_blank_line() -> None:
    v = PUB["signed_notes"][2]
    body, sigs = parse_signed_note(v["note"].encode())
    assert body == v["text"].encode()
    assert b"\n\n" in body  # the poem's own empty line stays in the text
    assert [(s.name, s.key_id.hex()) for s in sigs] == [tuple(x) for x in v["signers"]]


@pytest.mark.parametrize("case", PUB["invalid_notes"], ids=lambda c: c["name"])
def test_go_malformed_notes_are_refused(case: dict[str, Any]) -> None:
    name, key = _go_signer_key(PUB["signed_notes"][0]["signer_key"])
    with pytest.raises(IxbError) as info:
        verify_note(_note(case), name, key.public)
    assert info.value.code == case["error"]


def test_transparency_dev_checkpoints_and_consistency_both_directions() -> None:
    v = PUB["checkpoints"]
    name, key = _go_signer_key(v["signer_key"])
    assert name == v["key_name"]
    assert verifier_key(name, key.public) == v["verifier_key"]
    cps = {}
    for which in ("old", "new"):
        c = v[which]
        cp = verify_checkpoint(c["note"].encode(), key.public, v["origin"], key_name=v["key_name"])
        assert (cp.size, cp.root.hex(), cp.extensions) == (c["size"], c["root"], ())
        assert cp.time_ms is None
        assert cp.body() + b"\n" + sign_note(cp.body(), name, key).line().encode() == (
            c["note"].encode()
        )
        cps[which] = cp
    proof = [bytes.fromhex(h) for h in v["consistency_proof"]]
    check_consistency(cps["old"], cps["new"], proof)
    with pytest.raises(ForkError):
        check_consistency(cps["new"], cps["old"], proof)  # "submit smaller checkpoint"
    with pytest.raises(ForkError):
        check_consistency(cps["old"], cps["new"], [bytes.fromhex("aaaa")] * 4)  # garbage proof


@pytest.mark.parametrize("case", PUB["verifier_keys"], ids=lambda c: c["key"][:24])
def test_published_verifier_keys_both_directions(case: dict[str, Any]) -> None:
    name, sig_type, public = parse_verifier_key(case["key"])
    assert (name, sig_type) == (case["name"], case["type"])
    assert verifier_key(name, public, sig_type) == case["key"]


@pytest.mark.parametrize("case", PUB["invalid_verifier_keys"], ids=lambda c: c["key"][:40])
def test_published_bad_verifier_keys_are_refused(case: dict[str, Any]) -> None:
    with pytest.raises(IxbError) as info:
        parse_verifier_key(case["key"])
    assert info.value.code == case["error"]


def test_published_cosignature_layout() -> None:
    line_case, note_case = PUB["cosignature_timestamps"]
    (sig,) = parse_signature_lines(line_case["line"].encode())
    assert sig.key_id.hex() == line_case["key_id"]
    assert cosignature_timestamp(sig) == line_case["timestamp"]

    body, sigs = parse_signed_note(note_case["note"].encode())
    cp = parse_checkpoint(body)
    assert (cp.origin, cp.size) == (note_case["origin"], note_case["size"])
    assert [s.name for s in sigs] == [note_case["origin"], note_case["witness"]]
    assert sigs[1].key_id.hex() == note_case["key_id"]
    assert cosignature_timestamp(sigs[1]) == note_case["timestamp"]


# --- ixb vectors ---------------------------------------------------------------------


def test_ixb_vectors_are_what_the_generator_makes() -> None:
    """Entries, roots, notes and every invalid case rebuilt from seeds and fields."""
    assert build_ixb() == IXB


def test_ixb_leaves_use_the_shortest_map_header() -> None:
    for case in IXB["audit_entries"] + IXB["reply_entries"]:
        leaf = bytes.fromhex(case["encoding"])
        assert leaf[0] == 0x80 | len(case["fields"]), case["name"]  # fixmap: under 16 fields


@pytest.mark.parametrize("name", list(IXB["parties"]))
def test_ixb_party_keys_both_directions(name: str) -> None:
    p = IXB["parties"][name]
    cc = name[:3]
    public = SigningKeyPair(bytes.fromhex(p["signing_seed"])).public
    assert public.hex() == p["signing_public"]
    assert (log_origin(cc), witness_name(cc)) == (p["log_origin"], p["witness_name"])
    assert note_key_id(p["log_origin"], SIG_ED25519, public).hex() == p["log_key_id"]
    assert note_key_id(p["witness_name"], SIG_COSIGNATURE_V1, public).hex() == p["witness_key_id"]
    assert verifier_key(p["log_origin"], public) == p["log_verifier_key"]
    assert verifier_key(p["witness_name"], public, SIG_COSIGNATURE_V1) == p["witness_verifier_key"]
    assert parse_verifier_key(p["witness_verifier_key"]) == (
        p["witness_name"],
        SIG_COSIGNATURE_V1,
        public,
    )


@pytest.mark.parametrize("c", IXB["log"]["checkpoints"], ids=lambda c: f"size {c['size']}")
def test_ixb_checkpoint_both_directions(c: dict[str, Any]) -> None:
    cp = new_checkpoint("THA", c["size"], merkle.root(LEAVES[: c["size"]]), c["time_ms"])
    assert cp.root.hex() == c["root"]
    assert cp.body().decode() == c["text"]
    assert sign_checkpoint(cp, THA).decode() == c["note"]
    got = verify_checkpoint(c["note"].encode(), THA.signing.public, "ixb.THA")
    assert got == cp
    assert (got.time_ms, got.country) == (c["time_ms"], "THA")


def test_ixb_proofs_both_directions() -> None:
    log = IXB["log"]
    old, new = (
        verify_checkpoint(c["note"].encode(), THA.signing.public, "ixb.THA")
        for c in log["checkpoints"]
    )
    cons = log["consistency"]
    assert [p.hex() for p in merkle.consistency_proof(LEAVES, cons["old_size"])] == cons["proof"]
    check_consistency(old, new, [bytes.fromhex(h) for h in cons["proof"]])
    inc = log["inclusion"]
    assert [p.hex() for p in merkle.inclusion_proof(LEAVES, inc["index"])] == inc["proof"]
    merkle.verify_inclusion(
        LEAVES[inc["index"]],
        inc["index"],
        inc["size"],
        [bytes.fromhex(h) for h in inc["proof"]],
        new.root,
    )


def test_ixb_cosignatures_both_directions() -> None:
    log = IXB["log"]
    note = log["checkpoints"][1]["note"].encode()
    cp = parse_checkpoint(parse_signed_note(note)[0])
    witnesses = {"MYS/HUB": MYS, "MMR/HUB": MMR}
    copies = []
    for c in log["cosignatures"]:
        w = witnesses[c["witness"]]
        assert cosignature_for(cp, w, c["name"], c["time_s"]).line() == c["line"]
        copies.append(cosign(note, w, c["name"], c["time_s"]))
    cosigned = log["cosigned_note"].encode()
    assert merge_notes(*copies) == cosigned
    assert verify_checkpoint(cosigned, THA.signing.public, "ixb.THA") == cp
    for c in log["cosignatures"]:
        key = witnesses[c["witness"]].signing.public
        assert verify_cosignature(cosigned, key, c["name"]) == c["time_s"]


@pytest.mark.parametrize("c", IXB["consistency_cases"], ids=lambda c: c["name"])
def test_ixb_consistency_cases(c: dict[str, Any]) -> None:
    def cp(size: int, root: str) -> Checkpoint:
        return new_checkpoint("THA", size, bytes.fromhex(root), T0)

    old, new = cp(c["old_size"], c["old_root"]), cp(c["new_size"], c["new_root"])
    proof = [bytes.fromhex(h) for h in c["proof"]]
    if "error" not in c:
        check_consistency(old, new, proof)
        return
    with pytest.raises(IxbError) as info:
        check_consistency(old, new, proof)
    assert info.value.code == c["error"]


@pytest.mark.parametrize("case", IXB["invalid_checkpoint_notes"]["cases"], ids=lambda c: c["name"])
def test_ixb_invalid_checkpoint_notes(case: dict[str, Any]) -> None:
    with pytest.raises(IxbError) as info:
        verify_checkpoint(_note(case), THA.signing.public, "ixb.THA")
    assert info.value.code == case["error"], info.value.detail


@pytest.mark.parametrize("case", IXB["invalid_cosignatures"]["cases"], ids=lambda c: c["name"])
def test_ixb_invalid_cosignatures(case: dict[str, Any]) -> None:
    with pytest.raises(IxbError) as info:
        verify_cosignature(_note(case), MYS.signing.public, "ixb.MYS.witness")
    assert info.value.code == case["error"], info.value.detail


# --- checkpoints ----------------------------------------------------------------------

ROOT = merkle.root(LEAVES[:4])
TIME = ("time 1795000000000",)

BAD_CHECKPOINTS: dict[str, tuple[Any, ...]] = {
    "empty origin": ("", 1, ROOT, ()),
    "origin with a control character": ("log\x7f", 1, ROOT, ()),
    "origin not a string": (b"log", 1, ROOT, ()),
    "ixb origin of no country": ("ixb.XYZ", 1, ROOT, TIME),
    "ixb origin in lower case": ("ixb.tha", 1, ROOT, TIME),
    "ixb checkpoint without time": ("ixb.THA", 1, ROOT, ()),
    "ixb checkpoint with a second extension": ("ixb.THA", 1, ROOT, (*TIME, "x")),
    "ixb time above the limit": ("ixb.THA", 1, ROOT, (f"time {MAX_TIME_MS + 1}",)),
    "ixb time negative": ("ixb.THA", 1, ROOT, ("time -1",)),
    "size negative": ("log", -1, ROOT, ()),
    "size 2^64": ("log", MAX_TREE_SIZE + 1, ROOT, ()),
    "size a bool": ("log", True, ROOT, ()),
    "root of 31 bytes": ("log", 1, ROOT[:31], ()),
    "root not bytes": ("log", 1, ROOT.hex(), ()),
    "size 0 with a non-empty root": ("log", 0, ROOT, ()),
    "empty extension": ("log", 1, ROOT, ("",)),
    "extension with a newline": ("log", 1, ROOT, ("a\nb",)),
    "extensions as a list": ("log", 1, ROOT, ["a"]),
    "17 extensions": ("log", 1, ROOT, ("x",) * 17),
}


@pytest.mark.parametrize("args", BAD_CHECKPOINTS.values(), ids=list(BAD_CHECKPOINTS))
def test_a_checkpoint_that_exists_is_valid(args: tuple[Any, ...]) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint(*args)


ROOT_B64 = base64.b64encode(ROOT).decode()
URLSAFE_ROOT = base64.urlsafe_b64encode(b"\xff" * 32).decode()
BAD_TEXTS: dict[str, bytes] = {
    "no final newline": f"log\n1\n{ROOT_B64}".encode(),
    "two lines": b"log\n1\n",
    "empty line": f"log\n1\n{ROOT_B64}\n\n".encode(),
    "size with a plus": f"log\n+1\n{ROOT_B64}\n".encode(),
    "size with a space": f"log\n 1\n{ROOT_B64}\n".encode(),
    "size with an underscore": f"log\n1_0\n{ROOT_B64}\n".encode(),
    "size in Arabic-Indic digits": f"log\n\u0661\n{ROOT_B64}\n".encode(),
    "size with a leading zero": f"log\n01\n{ROOT_B64}\n".encode(),
    "size 2^64": f"log\n{2**64}\n{ROOT_B64}\n".encode(),
    "size of 21 digits": f"log\n{'9' * 21}\n{ROOT_B64}\n".encode(),
    "root without padding": f"log\n1\n{ROOT_B64.rstrip('=')}\n".encode(),
    "root in URL-safe base64": f"log\n1\n{URLSAFE_ROOT}\n".encode(),
    "root with a trailing space": f"log\n1\n{ROOT_B64} \n".encode(),
    "CRLF": f"log\r\n1\r\n{ROOT_B64}\r\n".encode(),
    "not UTF-8": b"\xfflog\n1\n" + ROOT_B64.encode() + b"\n",
    "tab in the origin": f"l\tg\n1\n{ROOT_B64}\n".encode(),
}


@pytest.mark.parametrize("text", BAD_TEXTS.values(), ids=list(BAD_TEXTS))
def test_checkpoint_text_refusals(text: bytes) -> None:
    with pytest.raises(CheckpointError):
        parse_checkpoint(text)


origins = st.from_regex(r"[a-z0-9./-]{1,40}", fullmatch=True).filter(
    lambda o: not o.startswith("ixb.")
)
extension_lines = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=40)


@FAST
@given(
    origin=origins,
    size=st.integers(0, MAX_TREE_SIZE),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(extension_lines, max_size=3).map(tuple),
)
def test_checkpoint_text_round_trips(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    cp = Checkpoint(origin, size, merkle.EMPTY_ROOT if size == 0 else root, extensions)
    assert parse_checkpoint(cp.body()) == cp


@FAST
@given(size=st.integers(0, 10**6), time_ms=st.integers(0, MAX_TIME_MS))
def test_ixb_checkpoint_round_trips(size: int, time_ms: int) -> None:
    cp = new_checkpoint("MYS", size, merkle.EMPTY_ROOT if size == 0 else ROOT, time_ms)
    assert parse_checkpoint(cp.body()) == cp
    assert cp.time_ms == time_ms
    note = sign_checkpoint(cp, MYS)
    assert verify_checkpoint(note, MYS.signing.public, "ixb.MYS") == cp


# --- signed notes ------------------------------------------------------------------------

NOTE = IXB["log"]["checkpoints"][0]["note"].encode()
COSIGNED = IXB["log"]["cosigned_note"].encode()


@FAST
@given(st.binary(max_size=600))
def test_random_bytes_give_only_typed_errors(data: bytes) -> None:
    for call in (
        lambda: parse_signed_note(data),
        lambda: parse_signature_lines(data),
        lambda: parse_checkpoint(data),
        lambda: verify_checkpoint(data, THA.signing.public, "ixb.THA"),
        lambda: verify_cosignature(data, MYS.signing.public, "ixb.MYS.witness"),
        lambda: cosign(data, MYS, "ixb.MYS.witness", 1),
    ):
        with contextlib.suppress(IxbError):
            call()


note_chars = st.sampled_from(["\n", "\u2014", " ", "+", "=", "/", "a", "A", "0", "1", "\r", "."])


@FAST
@given(st.text(note_chars, max_size=300))
def test_note_shaped_text_gives_only_typed_errors(text: str) -> None:
    with contextlib.suppress(IxbError):
        parse_signed_note(text.encode())


def _line_spans(note: bytes) -> list[tuple[int, int]]:
    spans, start = [], 0
    for line in note.split(b"\n")[:-1]:
        spans.append((start, start + len(line) + 1))
        start += len(line) + 1
    return spans


def _flips(note: bytes, lo: int, hi: int) -> list[bytes]:
    out = []
    for i in range(lo, hi):
        for bit in range(8):
            b = bytearray(note)
            b[i] ^= 1 << bit
            out.append(bytes(b))
    return out


def test_every_bit_flip_of_a_signed_checkpoint_is_refused() -> None:
    for flipped in _flips(NOTE, 0, len(NOTE)):
        with pytest.raises(IxbError):
            verify_checkpoint(flipped, THA.signing.public, "ixb.THA")


def test_every_bit_flip_of_a_cosignature_is_refused() -> None:
    spans = _line_spans(COSIGNED)
    body_end = spans[3][1] + 1  # four text lines and the blank line
    log_line, mys_line, mmr_line = spans[5], spans[6], spans[7]
    assert COSIGNED[slice(*mys_line)].startswith("\u2014 ixb.MYS.witness ".encode())
    # The witness's check covers the text and its own line …
    for lo, hi in ((0, body_end), mys_line):
        for flipped in _flips(COSIGNED, lo, hi):
            with pytest.raises(IxbError):
                verify_cosignature(flipped, MYS.signing.public, "ixb.MYS.witness")
    # … the log's check the text and the log's line; other lines are ignored (signed-note).
    for lo, hi in ((0, body_end), log_line):
        for flipped in _flips(COSIGNED, lo, hi):
            with pytest.raises(IxbError):
                verify_checkpoint(flipped, THA.signing.public, "ixb.THA")
    assert verify_cosignature(COSIGNED, MMR.signing.public, "ixb.MMR.witness") > 0
    assert mmr_line[1] == len(COSIGNED)


@FAST
@given(st.data())
def test_random_edits_of_a_note_are_refused(data: st.DataObject) -> None:
    note = bytearray(NOTE)
    i = data.draw(st.integers(0, len(note) - 1))
    kind = data.draw(st.sampled_from(["insert", "delete", "replace"]))
    byte = data.draw(st.integers(0, 255))
    if kind == "insert":
        note.insert(i, byte)
    elif kind == "delete":
        del note[i]
    elif note[i] != byte:
        note[i] = byte
    else:
        return
    with pytest.raises(IxbError):
        verify_checkpoint(bytes(note), THA.signing.public, "ixb.THA")


def test_unknown_signers_are_kept_and_ignored() -> None:
    body = parse_signed_note(NOTE)[0]
    stranger = SigningKeyPair(bytes([7]) * 32)
    log_kid = note_key_id("ixb.THA", SIG_ED25519, THA.signing.public)
    extra = [
        sign_note(body, "example.com/someone", stranger),
        # Same name, other key id; same key id, other name: both "unknown" (signed-note).
        sign_note(body, "ixb.THA", stranger),
        NoteSignature("ixb.THA-other", log_kid, bytes(64)),
    ]
    note = add_signatures(NOTE, extra)
    _, sigs = parse_signed_note(note)
    assert len(sigs) == 4
    assert verify_checkpoint(note, THA.signing.public, "ixb.THA").size == 4


def test_a_note_holds_sixteen_signatures_and_no_more_than_the_limit() -> None:
    body = parse_signed_note(NOTE)[0]
    keys = [SigningKeyPair(bytes([i]) * 32) for i in range(1, 16)]
    note = add_signatures(NOTE, [sign_note(body, f"w{i}", k) for i, k in enumerate(keys)])
    assert len(parse_signed_note(note)[1]) == 16
    line = NOTE.split(b"\n\n")[1]
    many = [line.replace(b"ixb.THA", f"n{i}".encode()) for i in range(MAX_NOTE_SIGNATURES + 1)]
    with pytest.raises(CheckpointError):
        parse_signed_note(body + b"\n" + b"".join(many))
    with pytest.raises(TooLargeError):
        parse_signed_note(NOTE + b"x" * MAX_NOTE_BYTES)


def test_cosigning_again_replaces_the_earlier_line() -> None:
    once = cosign(NOTE, MYS, "ixb.MYS.witness", 100)
    twice = cosign(once, MYS, "ixb.MYS.witness", 200)
    assert len(parse_signed_note(twice)[1]) == 2
    assert verify_cosignature(twice, MYS.signing.public, "ixb.MYS.witness") == 200
    assert merge_notes(twice, once) == once  # later notes' lines win


def test_merging_notes_of_different_texts_is_refused() -> None:
    other = sign_checkpoint(new_checkpoint("THA", 1, merkle.root(LEAVES[:1]), T0), THA)
    with pytest.raises(CheckpointError):
        merge_notes(NOTE, other)


def test_duplicate_lines_in_new_signatures_are_a_caller_bug() -> None:
    sig = parse_signed_note(NOTE)[1][0]
    with pytest.raises(ValueError, match="same key"):
        add_signatures(NOTE, [sig, sig])


def test_only_a_hub_signs_its_own_log() -> None:
    cp = parse_checkpoint(parse_signed_note(NOTE)[0])
    with pytest.raises(UnauthorisedError):
        sign_checkpoint(cp, MYS)
    agency = Identity.generate(parse_agency("THA/DSI-ATHD"))
    with pytest.raises(UnauthorisedError):
        sign_checkpoint(cp, agency)


def test_a_plain_note_never_looks_like_a_cosigned_message() -> None:
    key = THA.signing
    for text in (b"cosignature/v1\ntime 1\nixb.THA\n1\nx\n", b"subtree/v1\n", b"no newline"):
        with pytest.raises(ValueError, match="cosignature"):
            sign_note(text, "ixb.THA", key)


def test_one_hub_key_as_log_and_witness_is_domain_separated() -> None:
    """A hub signs its log (type 0x01) and cosigns others' (type 0x04) with one key."""
    cp = parse_checkpoint(parse_signed_note(NOTE)[0])
    log_sig = parse_signed_note(NOTE)[1][0]
    cosig = cosignature_for(cp, THA, "ixb.THA", 100)  # even under the log's own name
    assert cosig.key_id != log_sig.key_id
    with pytest.raises(SignatureError):  # a cosignature is no log signature
        verify_checkpoint(cp.body() + b"\n" + cosig.line().encode(), THA.signing.public, "ixb.THA")
    # A log signature relabelled as a cosignature (timestamp prepended) does not verify.
    forged = NoteSignature(
        "ixb.THA.witness",
        note_key_id("ixb.THA.witness", SIG_COSIGNATURE_V1, THA.signing.public),
        (0).to_bytes(8, "big") + log_sig.signature,
    )
    with pytest.raises(SignatureError):
        verify_cosignature(add_signatures(NOTE, [forged]), THA.signing.public, "ixb.THA.witness")


def test_cosignature_timestamp_above_2_63_is_refused() -> None:
    good = parse_signed_note(cosign(NOTE, MYS, "ixb.MYS.witness", 5))[1][1]
    bad = NoteSignature(good.name, good.key_id, (2**63).to_bytes(8, "big") + good.signature[8:])
    with pytest.raises(SignatureError):
        verify_cosignature(add_signatures(NOTE, [bad]), MYS.signing.public, "ixb.MYS.witness")


@pytest.mark.parametrize("time_s", [-1, 2**63, True, 1.5])
def test_cosign_refuses_impossible_times(time_s: Any) -> None:
    with pytest.raises(ValueError, match="2\\^63"):
        cosign(NOTE, MYS, "ixb.MYS.witness", time_s)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\u00a0b", "x" * 257])
def test_bad_witness_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="key name"):
        cosign(NOTE, MYS, name, 1)


def test_cosign_refuses_a_note_that_is_not_a_checkpoint() -> None:
    hello = b"hello\n\n" + sign_note(b"hello\n", "x", MYS.signing).line().encode()
    with pytest.raises(CheckpointError):
        cosign(hello, MYS, "ixb.MYS.witness", 1)


# --- fork detection -----------------------------------------------------------------------


def _entry(i: int) -> bytes:
    return encode_entry(
        AuditEntry(v=1, hub="THA/HUB", at=T0 + i, event=AuditEvent.POLICY_CHANGED, detail=f"n{i}")
    )


HONEST = [_entry(i) for i in range(10)]


def _cp(leaves: list[bytes]) -> Checkpoint:
    return new_checkpoint("THA", len(leaves), merkle.root(leaves), T0)


def _claim(old_size: int, new_leaves: list[bytes]) -> None:
    """What a witness does: the log's best proof from old_size, checked against its own record."""
    proof = merkle.consistency_proof(new_leaves, min(old_size, len(new_leaves)))
    check_consistency(_cp(HONEST[:old_size]), _cp(new_leaves), proof)


FORKS: dict[str, tuple[int, list[bytes]]] = {
    "entry rewritten": (5, [*HONEST[:2], _entry(99), *HONEST[3:]]),
    "last seen entry rewritten": (5, [*HONEST[:4], _entry(99), *HONEST[5:]]),
    "entry deleted": (5, [*HONEST[:2], *HONEST[3:]]),
    "entry deleted and the size kept": (5, [*HONEST[:2], *HONEST[3:], _entry(99)]),
    "entries reordered": (5, [HONEST[1], HONEST[0], *HONEST[2:]]),
    "entry inserted before the last seen": (5, [*HONEST[:3], _entry(99), *HONEST[3:]]),
    "log shrank": (5, HONEST[:4]),
    "log emptied": (5, []),
    "same size, different root": (5, [*HONEST[:4], _entry(99)]),
}


@pytest.mark.parametrize(("old_size", "new_leaves"), FORKS.values(), ids=list(FORKS))
def test_forks_are_detected(old_size: int, new_leaves: list[bytes]) -> None:
    with pytest.raises(ForkError) as info:
        _claim(old_size, new_leaves)
    assert info.value.code == "ixb.E_FORK"


@pytest.mark.parametrize("old_size", [0, 1, 4, 5, 10])
def test_honest_growth_is_accepted(old_size: int) -> None:
    _claim(old_size, HONEST)


def test_first_checkpoint_is_trusted_on_first_use_without_a_proof() -> None:
    check_consistency(None, _cp(HONEST), [])
    with pytest.raises(MerkleProofError):
        check_consistency(None, _cp(HONEST), merkle.consistency_proof(HONEST, 4))


def test_checkpoints_of_two_logs_are_not_compared() -> None:
    mys = new_checkpoint("MYS", 4, merkle.root(HONEST[:4]), T0)
    with pytest.raises(CheckpointError):
        check_consistency(_cp(HONEST[:4]), mys, [])


@FAST
@given(
    n=st.integers(1, 40),
    data=st.data(),
)
def test_any_change_below_the_old_size_is_a_fork(n: int, data: st.DataObject) -> None:
    leaves = [_entry(i) for i in range(n)]
    old_size = data.draw(st.integers(1, n))
    index = data.draw(st.integers(0, old_size - 1))
    forged = [*leaves[:index], _entry(1000 + index), *leaves[index + 1 :]]
    old = _cp(leaves[:old_size])
    check_consistency(old, _cp(leaves), merkle.consistency_proof(leaves, old_size))
    with pytest.raises(ForkError):
        check_consistency(old, _cp(forged), merkle.consistency_proof(forged, old_size))


def test_new_error_codes_are_registered_peer_faults() -> None:
    for cls, code in ((CheckpointError, "ixb.E_CHECKPOINT"), (ForkError, "ixb.E_FORK")):
        assert cls.code == code
        assert ERRORS_BY_CODE[code] is cls
        assert issubclass(cls, PeerError)
