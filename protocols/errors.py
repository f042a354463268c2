"""One error hierarchy for the whole of ixb, split by whose fault it is.

Every error carries a stable code (``ixb.E_…``). The code is what appears in
rejection receipts, audit entries, CLI output and the spec, so codes are never
renamed or reused; messages may change.

- :class:`PeerError`: the other side sent bad data (malformed, forged,
  replayed, expired, too large, not addressed to us). Never retry as is.
- :class:`PolicyError`: well-formed and authentic, but refused by policy
  (unauthorised, revoked, handling restriction, rate limit).
- :class:`LocalError`: our side failed (bad key file passphrase, storage,
  configuration). The message itself may be fine.
"""

from __future__ import annotations

from typing import ClassVar


class IxbError(Exception):
    """Base of every error ixb raises on purpose."""

    code: ClassVar[str] = "ixb.E_INTERNAL"
    fault: ClassVar[str] = "local"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def one_line(self) -> str:
        """The form shown to humans: ``error ixb.E_X: detail``."""
        return f"error {self.code}: {self.detail}"


class PeerError(IxbError):
    """The other side sent something we cannot accept."""

    fault = "peer"
    code = "ixb.E_PEER"


class PolicyError(IxbError):
    """Authentic input refused by policy."""

    fault = "policy"
    code = "ixb.E_POLICY"


class LocalError(IxbError):
    """Our own side failed; the input may be fine."""

    fault = "local"
    code = "ixb.E_LOCAL"


# --- peer sent bad data -----------------------------------------------------


class MalformedError(PeerError):
    code = "ixb.E_MALFORMED"


class NonCanonicalError(MalformedError):
    code = "ixb.E_NONCANONICAL"


class VersionError(PeerError):
    code = "ixb.E_VERSION"


class TooLargeError(PeerError):
    code = "ixb.E_TOO_LARGE"


class SchemaError(PeerError):
    """A body or field does not match its message type's schema."""

    code = "ixb.E_SCHEMA"


class IdentifierError(SchemaError):
    code = "ixb.E_IDENTIFIER"


class SignatureError(PeerError):
    code = "ixb.E_SIGNATURE"


class UnknownSenderError(PeerError):
    code = "ixb.E_UNKNOWN_SENDER"


class DecryptError(PeerError):
    code = "ixb.E_DECRYPT"


class NotRecipientError(PeerError):
    code = "ixb.E_NOT_RECIPIENT"


class UnknownRecipientError(PeerError):
    """A recipient that no directory lists (or that is revoked, or a hub)."""

    code = "ixb.E_UNKNOWN_RECIPIENT"


class ReplayError(PeerError):
    code = "ixb.E_REPLAY"


class ExpiredError(PeerError):
    code = "ixb.E_EXPIRED"


class ClockSkewError(PeerError):
    code = "ixb.E_CLOCK_SKEW"


class TtlError(PeerError):
    """``expires`` lies further after ``created`` than the limits allow."""

    code = "ixb.E_TTL"


class MrzError(PeerError):
    """An MRZ that does not parse (wrong length, characters or layout)."""

    code = "ixb.E_MRZ_FORMAT"


class MrzCheckDigitError(MrzError):
    code = "ixb.E_MRZ_CHECK"


class MrzCountryError(MrzError):
    code = "ixb.E_MRZ_COUNTRY"


class MrzDateError(MrzError):
    code = "ixb.E_MRZ_DATE"


class MerkleProofError(PeerError):
    """An inclusion or consistency proof that does not verify."""

    code = "ixb.E_PROOF"


class CheckpointError(PeerError):
    """A checkpoint, signed note, cosignature or verifier key that does not parse (SPEC §13)."""

    code = "ixb.E_CHECKPOINT"


class ForkError(PeerError):
    """A log's checkpoints cannot be shown to extend each other: shrunk, rewritten or forked.

    Raised by a witness comparing two checkpoints signed by the same log; it is
    the witness alarm of DESIGN.md §Audit log, never an ordinary refusal.
    """

    code = "ixb.E_FORK"


class TransitionError(PeerError):
    """A status change that the state machine does not allow (e.g. MLA)."""

    code = "ixb.E_TRANSITION"


class RollbackError(PeerError):
    """A directory older than (or as old as, but different from) the one already trusted."""

    code = "ixb.E_ROLLBACK"


class DirectoryError(PeerError):
    """A directory that cannot answer: another country's, or expired with no newer one."""

    code = "ixb.E_DIRECTORY"


# --- refused by policy ------------------------------------------------------


class UnauthorisedError(PolicyError):
    code = "ixb.E_UNAUTHORISED"


class RevokedError(PolicyError):
    code = "ixb.E_REVOKED"


class HandlingError(PolicyError):
    """A handling code forbids this (e.g. H2 onward dissemination)."""

    code = "ixb.E_HANDLING"


class RateLimitedError(PolicyError):
    code = "ixb.E_RATE_LIMITED"


# --- our side failed --------------------------------------------------------


class KeyFileError(LocalError):
    code = "ixb.E_KEYFILE"


class PassphraseError(KeyFileError):
    code = "ixb.E_PASSPHRASE"


class ConfigError(LocalError):
    code = "ixb.E_CONFIG"


class WitnessStateError(LocalError):
    """A witness lost its record of a peer log it witnessed: no cosigning until a repin."""

    code = "ixb.E_WITNESS_STATE"


class AuditStreamError(LocalError):
    """The copy of the audit log in the country's ``AUDIT`` stream cannot be used: two
    different leaves at one index, a missing index, or leaves that differ from the log's."""

    code = "ixb.E_AUDIT_STREAM"


class UsageError(LocalError):
    """A command was called with the wrong arguments."""

    code = "ixb.E_USAGE"


class IoError(LocalError):
    """A file or device could not be read or written."""

    code = "ixb.E_IO"


class BusyError(LocalError):
    """A hub at its capacity of lookups in flight refused one at once (SPEC §14): retry later,
    or send it over the durable path."""

    code = "ixb.E_BUSY"


class UnknownOutcomeError(IoError):
    """A publish the hub's JetStream never confirmed: it may or may not have been stored.

    Carries the message id and the sealed envelope, so the very same bytes can
    be published again under the same ``Nats-Msg-Id`` (SPEC §8.1), which
    JetStream stores at most once; sending the content again as a new message
    would duplicate it.
    """

    code = "ixb.E_UNKNOWN_OUTCOME"

    def __init__(self, detail: str, *, message_id: bytes = b"", sealed: bytes = b"") -> None:
        super().__init__(detail)
        self.message_id = message_id
        self.sealed = sealed


def _all_codes() -> dict[str, type[IxbError]]:
    seen: dict[str, type[IxbError]] = {}
    stack: list[type[IxbError]] = [IxbError]
    while stack:
        cls = stack.pop()
        seen[cls.code] = cls
        stack.extend(cls.__subclasses__())
    return seen


ERRORS_BY_CODE: dict[str, type[IxbError]] = _all_codes()
"""Every stable code and the class that carries it (for receipts and docs)."""


def error_for_code(code: str, detail: str) -> IxbError:
    """Rebuild a typed error from a code seen on the wire (unknown codes stay generic)."""
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        return PeerError(f"{code}: {detail}")
    return cls(detail)
