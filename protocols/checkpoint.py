"""Checkpoints of the audit log as C2SP signed notes, and witness cosignatures (SPEC.md §13).

A hub's audit log is only tamper-evident if its tree heads are signed and
other parties keep them: a hub that rewrites history must then either show
its peers two inconsistent signed heads or none at all. The formats are the
transparency-log ecosystem's, transcribed rather than designed, so that any
C2SP tool (Go's ``golang.org/x/mod/sumdb/note``, ``transparency-dev/formats``,
litetlog …) can check an exported ixb checkpoint:

- c2sp.org/tlog-checkpoint: the note text ``origin\\nsize\\nbase64(root)\\n``
  plus extension lines;
- c2sp.org/signed-note: text, a blank line, then lines
  ``— <key name> base64(key id ‖ signature)``, the key id being
  ``SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4]``; the log signs with type
  0x01 (Ed25519 over the text);
- c2sp.org/tlog-cosignature: a witness signs, with type 0x04,
  ``cosignature/v1\\ntime <seconds>\\n`` ‖ text, and its line carries
  ``key id ‖ u64be(seconds) ‖ signature``.

ixb's choices where the specs leave one (SPEC.md §13.8): a hub's log origin
and key name is ``ixb.<CC>``; its witness name is ``ixb.<CC>.witness``; an
ixb checkpoint carries exactly one extension line, ``time <ms>``; one key
(the hub key) signs as log and as witness, the two being domain-separated
by the signed messages themselves.

Like :mod:`protocols.merkle`, verifiers are the trust boundary: for any
input they return a verified value or raise an :class:`~protocols.errors.IxbError`.
Builders take only our own data and raise :class:`ValueError` on a caller bug.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from protocols.errors import (
    CheckpointError,
    ForkError,
    IxbError,
    MerkleProofError,
    SignatureError,
    TooLargeError,
    UnauthorisedError,
)
from protocols.fields import MAX_TIME_MS
from protocols.identifiers import check_country
from protocols.keys import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    Identity,
    SigningKeyPair,
    verify_signature,
)
from protocols.merkle import EMPTY_ROOT, verify_consistency

# Signature type bytes of c2sp.org/signed-note.
SIG_ED25519: Final = 0x01
SIG_COSIGNATURE_V1: Final = 0x04

NOTE_KEY_ID_BYTES: Final = 4
HASH_BYTES: Final = 32
TIMESTAMP_BYTES: Final = 8
COSIGNATURE_HEADER: Final = b"cosignature/v1\n"

# Hard protocol maxima (SPEC.md §13.5).
MAX_NOTE_BYTES: Final = 64 * 1024
"""A note with 256 Ed25519 cosignatures is about 30 KiB; signed-note asks for at least 16."""
MAX_NOTE_SIGNATURES: Final = 256
MAX_NAME_CHARS: Final = 256
MAX_EXTENSIONS: Final = 16
MAX_TREE_SIZE: Final = 2**64 - 1
MAX_COSIGNATURE_TIME: Final = 2**63 - 1

LOG_PREFIX: Final = "ixb."
WITNESS_SUFFIX: Final = ".witness"
TIME_EXTENSION: Final = "time "

_SIG_PREFIX: Final = "\u2014 "  # em dash, space
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
# Labels of the other messages C2SP keys sign; a plain note must not start with one.
_RESERVED_PREFIXES: Final = (b"cosignature/", b"subtree/")


# --- names, key ids, verifier keys ------------------------------------------------


def log_origin(country: str) -> str:
    """``ixb.<CC>``: the origin line of a hub's checkpoints and the name of its log key."""
    return LOG_PREFIX + check_country(country)


def witness_name(country: str) -> str:
    """``ixb.<CC>.witness``: the key name a hub cosigns other hubs' checkpoints under."""
    return log_origin(country) + WITNESS_SUFFIX


def note_key_id(name: str, sig_type: int, public: bytes) -> bytes:
    """``SHA-256(name ‖ 0x0A ‖ type ‖ public)[:4]``: names a key on a signature line."""
    _check_name(name, ValueError)
    if not 0 <= sig_type <= 0xFF:
        raise ValueError(f"signature type {sig_type} is not a byte")
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public).digest()
    return digest[:NOTE_KEY_ID_BYTES]


def verifier_key(name: str, public: bytes, sig_type: int = SIG_ED25519) -> str:
    """The C2SP verifier key text ``<name>+<hex key id>+base64(type ‖ public)``.

    What an operator exchanges out of band, and what Go's ``note.NewVerifier``
    (type 0x01) and ``transparency-dev/formats`` (type 0x04) read.
    """
    if sig_type not in (SIG_ED25519, SIG_COSIGNATURE_V1) or len(public) != PUBLIC_KEY_BYTES:
        raise ValueError("ixb has Ed25519 verifier keys of type 0x01 or 0x04 only")
    kid = note_key_id(name, sig_type, public).hex()
    return f"{name}+{kid}+{_b64e(bytes([sig_type]) + public)}"


def parse_verifier_key(text: str) -> tuple[str, int, bytes]:
    """``(name, signature type, public key)`` of a verifier key, its key id checked."""
    if not isinstance(text, str) or len(text) > MAX_NAME_CHARS + 64:
        raise CheckpointError("verifier key: not a string of a sensible length")
    parts = text.split("+", 2)  # names have no '+'; base64 may
    if len(parts) != 3:
        raise CheckpointError("verifier key: not of the form <name>+<key id>+<key>")
    name, kid, encoded = parts
    _check_name(name, CheckpointError)
    if not re.fullmatch(r"[0-9a-f]{8}", kid):
        raise CheckpointError("verifier key: key id is not 8 lower-case hex digits")
    raw = _b64d(encoded, "verifier key")
    if len(raw) != 1 + PUBLIC_KEY_BYTES or raw[0] not in (SIG_ED25519, SIG_COSIGNATURE_V1):
        raise CheckpointError("verifier key: not an Ed25519 key of type 0x01 or 0x04")
    sig_type, public = raw[0], raw[1:]
    if note_key_id(name, sig_type, public).hex() != kid:
        raise CheckpointError("verifier key: key id does not match the name and key")
    return name, sig_type, public


# --- checkpoints --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A C2SP checkpoint: a log's Merkle tree head. An instance is always well formed.

    Origins that start with ``ixb.`` are ixb hub logs: ``ixb.<CC>`` with a
    real country code, and exactly one extension line ``time <ms>`` (when
    the hub signed it). Other origins, seen only in published test vectors,
    follow C2SP alone: extension lines are opaque.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise CheckpointError("checkpoint: origin must be a non-empty string")
        if len(self.origin) > MAX_NAME_CHARS or _has_control(self.origin):
            raise CheckpointError(
                f"checkpoint: origin is over {MAX_NAME_CHARS} characters or has a control character"
            )
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise CheckpointError("checkpoint: size is not an integer")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError("checkpoint: size is outside 0 .. 2^64 - 1")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_BYTES:
            raise CheckpointError(f"checkpoint: root hash is not {HASH_BYTES} bytes")
        if self.size == 0 and not hmac.compare_digest(self.root, EMPTY_ROOT):
            raise CheckpointError("checkpoint: a tree of size 0 has the empty root")
        if not isinstance(self.extensions, tuple) or len(self.extensions) > MAX_EXTENSIONS:
            raise CheckpointError(
                f"checkpoint: extensions must be a tuple of at most {MAX_EXTENSIONS} lines"
            )
        for line in self.extensions:
            if not isinstance(line, str) or not line or _has_control(line):
                raise CheckpointError(
                    "checkpoint: an extension line is empty or has a control character"
                )
        if self.origin.startswith(LOG_PREFIX):
            self._check_ixb()

    def _check_ixb(self) -> None:
        try:
            check_country(self.origin[len(LOG_PREFIX) :])
        except IxbError:
            raise CheckpointError(
                f"checkpoint: origin {self.origin[:64]!r} is not ixb.<country code>"
            ) from None
        if len(self.extensions) != 1 or _parse_time(self.extensions[0]) is None:
            raise CheckpointError(
                f"checkpoint: an ixb checkpoint has exactly one extension line "
                f"'time <ms>' (0 .. {MAX_TIME_MS}, no leading zeros)"
            )

    def body(self) -> bytes:
        """The note text: every line, the last one included, ends in a newline."""
        lines = [self.origin, str(self.size), _b64e(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines).encode("utf-8")

    @property
    def time_ms(self) -> int | None:
        """When the hub signed it (ms since the epoch), for ixb checkpoints; else None."""
        if not self.origin.startswith(LOG_PREFIX):
            return None
        return _parse_time(self.extensions[0])

    @property
    def country(self) -> str | None:
        """The country whose hub keeps this log, for ixb checkpoints; else None."""
        return self.origin[len(LOG_PREFIX) :] if self.origin.startswith(LOG_PREFIX) else None


def new_checkpoint(country: str, size: int, root: bytes, time_ms: int) -> Checkpoint:
    """The checkpoint a hub signs for its own log at ``time_ms``."""
    return Checkpoint(log_origin(country), size, root, (f"{TIME_EXTENSION}{time_ms}",))


def parse_checkpoint(body: bytes) -> Checkpoint:
    """Parse a checkpoint's note text strictly: exactly one text gives each checkpoint."""
    text = _decode_text(body, "checkpoint")
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint: text does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint: fewer than three lines (origin, size, root)")
    if any(not line for line in lines):
        raise CheckpointError("checkpoint: has an empty line")
    origin, size_text, root_text, *extensions = lines
    if not _DECIMAL.fullmatch(size_text):
        raise CheckpointError("checkpoint: size is not a decimal number without leading zeros")
    root = _b64d(root_text, "checkpoint root hash")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


def _parse_time(line: str) -> int | None:
    if not line.startswith(TIME_EXTENSION):
        return None
    digits = line[len(TIME_EXTENSION) :]
    if not _DECIMAL.fullmatch(digits) or int(digits) > MAX_TIME_MS:
        return None
    return int(digits)


# --- signed notes -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: who (name and key id) and the bytes after the key id."""

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_name(self.name, CheckpointError)
        if not isinstance(self.key_id, bytes) or len(self.key_id) != NOTE_KEY_ID_BYTES:
            raise CheckpointError(f"note signature: key id is not {NOTE_KEY_ID_BYTES} bytes")
        if not isinstance(self.signature, bytes) or not self.signature:
            raise CheckpointError("note signature: empty signature")

    def line(self) -> str:
        """``— <name> base64(key id ‖ signature)`` and a newline."""
        return f"{_SIG_PREFIX}{self.name} {_b64e(self.key_id + self.signature)}\n"


def parse_signed_note(data: bytes) -> tuple[bytes, list[NoteSignature]]:
    """Split a signed note into its text and its signature lines, verifying nothing.

    Strict: at most :data:`MAX_NOTE_BYTES`, UTF-8 without control characters
    but newline, the text separated from the signatures by its last blank
    line, at least one and at most :data:`MAX_NOTE_SIGNATURES` well-formed
    lines, canonical base64, no two lines for the same key. Lines of keys the
    caller does not know are returned like the others.
    """
    if not isinstance(data, bytes):
        raise CheckpointError("signed note: not bytes")
    if len(data) > MAX_NOTE_BYTES:
        raise TooLargeError(f"signed note is {len(data)} bytes; limit {MAX_NOTE_BYTES}")
    text = _decode_text(data, "signed note")
    split = text.rfind("\n\n")
    if split < 0:
        raise CheckpointError("signed note: no blank line between text and signatures")
    body, block = text[: split + 1], text[split + 2 :]
    return body.encode("utf-8"), _parse_lines(block, "signed note")


def parse_signature_lines(data: bytes) -> list[NoteSignature]:
    """Signature lines alone, as a tlog-witness ``add-checkpoint`` response carries them."""
    if not isinstance(data, bytes):
        raise CheckpointError("signature lines: not bytes")
    if len(data) > MAX_NOTE_BYTES:
        raise TooLargeError(f"signature lines are {len(data)} bytes; limit {MAX_NOTE_BYTES}")
    return _parse_lines(_decode_text(data, "signature lines"), "signature lines")


def _parse_lines(block: str, what: str) -> list[NoteSignature]:
    if not block.endswith("\n"):
        raise CheckpointError(f"{what}: no signature line, or the last does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_NOTE_SIGNATURES:
        raise CheckpointError(f"{what}: more than {MAX_NOTE_SIGNATURES} signatures")
    signatures: list[NoteSignature] = []
    seen: set[tuple[str, bytes]] = set()
    for i, line in enumerate(lines, 1):
        if not line.startswith(_SIG_PREFIX):
            raise CheckpointError(f"{what}: line {i} does not start with an em dash and a space")
        name, _, encoded = line[len(_SIG_PREFIX) :].partition(" ")
        _check_name(name, CheckpointError)
        raw = _b64d(encoded, f"{what}: line {i}")
        if len(raw) <= NOTE_KEY_ID_BYTES:
            raise CheckpointError(f"{what}: line {i} is shorter than a key id and a signature")
        sig = NoteSignature(name, raw[:NOTE_KEY_ID_BYTES], raw[NOTE_KEY_ID_BYTES:])
        if (sig.name, sig.key_id) in seen:
            raise CheckpointError(f"{what}: two lines for key {name} {sig.key_id.hex()}")
        seen.add((sig.name, sig.key_id))
        signatures.append(sig)
    return signatures


def _format_note(body: bytes, signatures: Sequence[NoteSignature]) -> bytes:
    if not signatures:
        raise ValueError("a signed note has at least one signature")
    if len(signatures) > MAX_NOTE_SIGNATURES:
        raise TooLargeError(f"a note holds at most {MAX_NOTE_SIGNATURES} signatures")
    note = body + b"\n" + "".join(s.line() for s in signatures).encode("utf-8")
    if len(note) > MAX_NOTE_BYTES:
        raise TooLargeError(f"signed note would be {len(note)} bytes; limit {MAX_NOTE_BYTES}")
    return note


def add_signatures(note: bytes, signatures: Iterable[NoteSignature]) -> bytes:
    """The note with ``signatures`` added, each replacing in place a line of the same key.

    As with Go's ``note.Sign``, a witness that cosigns again replaces its
    earlier cosignature rather than adding a second line; lines of new keys
    go last. Nothing is verified.
    """
    body, lines = parse_signed_note(note)
    position = {(s.name, s.key_id): i for i, s in enumerate(lines)}
    added: set[tuple[str, bytes]] = set()
    for sig in signatures:
        key = (sig.name, sig.key_id)
        if key in added:
            raise ValueError("two new signatures for the same key")
        added.add(key)
        if key in position:
            lines[position[key]] = sig
        else:
            position[key] = len(lines)
            lines.append(sig)
    return _format_note(body, lines)


def merge_notes(note: bytes, *others: bytes) -> bytes:
    """One note with the signatures of several notes of the same text.

    A log collects its witnesses' cosigned copies this way. Later notes'
    lines replace earlier lines of the same key. Nothing is verified:
    verify the result with the keys you trust.
    """
    body, _ = parse_signed_note(note)
    for other in others:
        other_body, signatures = parse_signed_note(other)
        if other_body != body:
            raise CheckpointError("cannot merge signatures of notes with different texts")
        note = add_signatures(note, signatures)
    return note


def sign_note(body: bytes, name: str, key: SigningKeyPair) -> NoteSignature:
    """A signed-note Ed25519 (type 0x01) signature line over ``body``.

    Refuses texts that begin like another C2SP signed message (``cosignature/``,
    ``subtree/``), so a key shared by a log and a witness can never be made to
    sign one kind of message as the other.
    """
    _decode_text(body, "note text")
    if not body.endswith(b"\n") or body.startswith(_RESERVED_PREFIXES):
        raise ValueError("a note text ends in a newline and does not start like a cosignature")
    return NoteSignature(name, note_key_id(name, SIG_ED25519, key.public), key.sign(body))


def verify_note(note: bytes, name: str, public: bytes) -> bytes:
    """The text of ``note`` if the Ed25519 (type 0x01) key ``name``/``public`` signed it."""
    body, signatures = parse_signed_note(note)
    kid = note_key_id(name, SIG_ED25519, public)
    _verify_lines(signatures, name, kid, lambda sig: _verify_ed25519(public, body, sig), "key")
    return body


def _verify_lines(
    signatures: Sequence[NoteSignature],
    name: str,
    kid: bytes,
    verify: Callable[[bytes], None],
    role: str,
) -> NoteSignature:
    """Verify the line of the one known key; lines of other keys are ignored (signed-note).

    Parsing already refused two lines of one key, so there is at most one.
    """
    for sig in signatures:
        if sig.name == name and hmac.compare_digest(sig.key_id, kid):
            try:
                verify(sig.signature)
            except SignatureError:
                raise SignatureError(
                    f"the {role} signature of {name} ({kid.hex()}) does not verify"
                ) from None
            return sig
    raise SignatureError(f"no {role} signature by {name} ({kid.hex()})")


def _verify_ed25519(public: bytes, message: bytes, signature: bytes) -> None:
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError("an Ed25519 signature is 64 bytes")
    verify_signature(public, message, signature)


# --- the log's signature ---------------------------------------------------------------


def sign_checkpoint(cp: Checkpoint, hub: Identity) -> bytes:
    """The signed note of a hub's checkpoint: what it publishes and sends to its witnesses."""
    if not hub.principal.is_hub or cp.origin != log_origin(hub.principal.country):
        raise UnauthorisedError(f"{hub.principal} may not sign checkpoints of {cp.origin}")
    return _format_note(cp.body(), [sign_note(cp.body(), cp.origin, hub.signing)])


def verify_checkpoint(
    note: bytes, origin_key: bytes, origin: str, *, key_name: str | None = None
) -> Checkpoint:
    """The checkpoint of ``note`` if the log ``origin`` signed it with ``origin_key``.

    The key name is the origin (tlog-checkpoint: SHOULD match); ``key_name``
    overrides it only for foreign logs that name their key otherwise. Order:
    note syntax (``ixb.E_CHECKPOINT``), the log's signature
    (``ixb.E_SIGNATURE``), then the text as a checkpoint of ``origin``
    (``ixb.E_CHECKPOINT``).
    """
    body = verify_note(note, origin if key_name is None else key_name, origin_key)
    cp = parse_checkpoint(body)
    if cp.origin != origin:
        raise CheckpointError(f"checkpoint is of log {cp.origin[:64]!r}, not {origin[:64]!r}")
    return cp


def verify_checkpoint_by_any(
    note: bytes, origin_keys: tuple[bytes, ...], origin: str
) -> tuple[Checkpoint, bytes]:
    """:func:`verify_checkpoint` with the first of ``origin_keys`` that signed ``note``, and
    that key: a hub's keys across federation versions (SPEC §12, Key validity across
    versions). Raises the error of the first key when none did."""
    first: IxbError | None = None
    for key in origin_keys:
        try:
            return verify_checkpoint(note, key, origin), key
        except SignatureError as exc:
            first = first or exc
    raise first or SignatureError("no key to verify the checkpoint with")


def verify_cosignature_by_any(
    note: bytes, witness_keys: tuple[bytes, ...], witness_name: str
) -> int:
    """:func:`verify_cosignature` with the first of ``witness_keys`` whose line verifies."""
    first: IxbError | None = None
    for key in witness_keys:
        try:
            return verify_cosignature(note, key, witness_name)
        except SignatureError as exc:
            first = first or exc
    raise first or SignatureError("no key to verify the cosignature with")


# --- witness cosignatures --------------------------------------------------------------


def cosignature_message(body: bytes, time_s: int) -> bytes:
    """What a cosigner signs: ``cosignature/v1\\ntime <seconds>\\n`` ‖ checkpoint text."""
    return COSIGNATURE_HEADER + f"time {time_s}\n".encode("ascii") + body


def cosignature_for(cp: Checkpoint, witness: Identity, name: str, time_s: int) -> NoteSignature:
    """A cosignature/v1 line on ``cp`` at ``time_s``, as a tlog-witness response carries it.

    Only call this after checking the log's signature (:func:`verify_checkpoint`)
    and consistency with the last checkpoint cosigned (:func:`check_consistency`):
    the line states that ``cp`` is the largest consistent tree seen so far.
    """
    if (
        not isinstance(time_s, int)
        or isinstance(time_s, bool)
        or not 0 <= time_s <= MAX_COSIGNATURE_TIME
    ):
        raise ValueError(f"cosignature time {time_s!r} is outside 0 .. 2^63 - 1")
    sig = witness.signing.sign(cosignature_message(cp.body(), time_s))
    kid = note_key_id(name, SIG_COSIGNATURE_V1, witness.signing.public)
    return NoteSignature(name, kid, time_s.to_bytes(TIMESTAMP_BYTES, "big") + sig)


def cosign(note: bytes, witness: Identity, witness_name: str, time_s: int) -> bytes:
    """``note`` with the witness's cosignature line appended (replacing an older one).

    Signs, checks nothing: the caller has verified the log's signature and
    consistency first, as for :func:`cosignature_for`.
    """
    body, _ = parse_signed_note(note)
    cp = parse_checkpoint(body)
    return add_signatures(note, [cosignature_for(cp, witness, witness_name, time_s)])


def cosignature_timestamp(sig: NoteSignature) -> int:
    """The time a cosignature line claims, unverified: for display and diagnostics only."""
    if len(sig.signature) != TIMESTAMP_BYTES + SIGNATURE_BYTES:
        raise CheckpointError("cosignature: not a timestamp and an Ed25519 signature")
    return int.from_bytes(sig.signature[:TIMESTAMP_BYTES], "big")


def verify_cosignature(note: bytes, witness_key: bytes, witness_name: str) -> int:
    """The time (Unix seconds) at which witness ``witness_name`` cosigned ``note``.

    Checks the witness's line only; check the log's own signature with
    :func:`verify_checkpoint`. A line of the witness's key that does not
    verify, or no such line, raises ``ixb.E_SIGNATURE``.
    """
    body, signatures = parse_signed_note(note)
    parse_checkpoint(body)
    kid = note_key_id(witness_name, SIG_COSIGNATURE_V1, witness_key)

    def verify(payload: bytes) -> None:
        if len(payload) != TIMESTAMP_BYTES + SIGNATURE_BYTES:
            raise SignatureError("not a timestamp and an Ed25519 signature")
        time_s = int.from_bytes(payload[:TIMESTAMP_BYTES], "big")
        if time_s > MAX_COSIGNATURE_TIME:
            raise SignatureError("timestamp above 2^63 - 1")
        _verify_ed25519(witness_key, cosignature_message(body, time_s), payload[TIMESTAMP_BYTES:])

    sig = _verify_lines(signatures, witness_name, kid, verify, "cosignature")
    return int.from_bytes(sig.signature[:TIMESTAMP_BYTES], "big")


# --- consistency: what a witness checks ---------------------------------------------------


def check_consistency(old: Checkpoint | None, new: Checkpoint, proof: Sequence[bytes]) -> None:
    """Refuse ``new`` unless it extends ``old``, the last checkpoint seen of the same log.

    ``old`` None means none seen yet: ``new`` is trusted on first use and the
    proof must be empty (tlog-witness: old size 0). Otherwise every failure
    is a :class:`ForkError`: the log shrank, signed two roots for one size,
    or could not prove that ``new`` keeps every entry of ``old`` in place.
    Only the text's first three lines count; extension lines (ixb's time)
    make no statement a witness checks (tlog-cosignature).
    """
    if old is None:
        if not isinstance(proof, Sequence) or isinstance(proof, (bytes, str)) or proof:
            raise MerkleProofError("consistency proof: must be empty for a first checkpoint")
        return
    if old.origin != new.origin:
        raise CheckpointError(f"checkpoints of two logs: {old.origin[:64]!r}, {new.origin[:64]!r}")
    if new.size < old.size:
        raise ForkError(f"{new.origin}: log shrank from {old.size} to {new.size} entries")
    if new.size == old.size and not hmac.compare_digest(new.root, old.root):
        raise ForkError(f"{new.origin}: two different roots signed for size {new.size}")
    try:
        verify_consistency(old.size, new.size, old.root, new.root, proof)
    except MerkleProofError as exc:
        raise ForkError(
            f"{new.origin}: size {new.size} is not shown to extend size {old.size} ({exc.detail})"
        ) from None


# --- text helpers ------------------------------------------------------------------------


def _decode_text(data: bytes, what: str) -> str:
    """UTF-8 with no control character but newline (signed-note); names a CR outright."""
    if not isinstance(data, bytes):
        raise CheckpointError(f"{what}: not bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{what}: not UTF-8") from None
    if "\r" in text:
        raise CheckpointError(f"{what}: has a carriage return (lines end in LF only)")
    if any(ch < " " and ch != "\n" for ch in text):
        raise CheckpointError(f"{what}: has a control character")
    return text


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def _check_name(name: object, error: type[Exception]) -> None:
    """signed-note key names: non-empty, no Unicode space, no '+'; ixb adds no controls."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_NAME_CHARS
        or "+" in name
        or any(ch.isspace() for ch in name)
        or _has_control(name)
    ):
        shown = name[:64] if isinstance(name, str) else type(name).__name__
        raise error(f"{shown!r} is not a key name (non-empty, no spaces, '+' or controls)")


def _b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64d(text: str, what: str) -> bytes:
    """Standard base64 with padding, in its one canonical form (no stray bits)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise CheckpointError(f"{what}: not base64") from None
    if _b64e(raw) != text:
        raise CheckpointError(f"{what}: not canonical base64")
    return raw
