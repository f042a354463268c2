"""The trusted directories: whose keys and roles a hub or an agency relies on, at a given time.

A state machine in the manner of python-tuf's ``TrustedMetadataSet``
(``tuf/ngclient/_internal/trusted_metadata_set.py``). It starts from the
trust anchors (:class:`~protocols.federation.TrustAnchors`, read from the
federation file) and moves forward one verified directory at a time.

Contract:

- I/O-free: signed bytes in (fetched and stored by the caller), answers or a
  typed :class:`~protocols.errors.IxbError` out;
- a directory becomes trusted only after
  :func:`~protocols.directory.verify_directory` accepted it for its country
  (SPEC.md §12 "Verification order", steps 1-9), so a trusted directory never
  exists unverified; a newer version replaces an older one, never the
  reverse, and a failed update raises and leaves the state as it was;
- every answer that depends on time takes ``now_ms``: the one reference time
  of the caller's decision (an update, an envelope's verification, a send),
  as python-tuf fixes one ``reference_time`` per refresh. Nothing here reads
  a clock, so one decision never sees two different times;
- answers follow §12 "Using the directory: sender keys", rules 1 and
  2.1-2.8; the rule numbers are marked in the code.

:class:`TrustedDirectories` implements :class:`protocols.keys.SigningKeyLookup`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from protocols.directory import Directory, DirectoryEntry, check_unexpired, verify_directory
from protocols.errors import (
    DirectoryError,
    NotRecipientError,
    RevokedError,
    UnauthorisedError,
    UnknownSenderError,
)
from protocols.federation import TrustAnchors
from protocols.fields import utc_text
from protocols.identifiers import Principal, check_country
from protocols.keys import KeyAlg, PublicIdentity, key_id
from protocols.roles import HUB_MAY_SEND, Role, check_may_send


@dataclass(frozen=True, slots=True)
class _Trusted:
    """One country's directory as trusted; made only by :meth:`TrustedDirectories.update`."""

    directory: Directory
    signed: bytes
    by_agency: Mapping[str, DirectoryEntry]


class TrustedDirectories:
    """Who may sign, per the trust anchors and each country's latest verified directory."""

    def __init__(self, trust: TrustAnchors) -> None:
        self._trust = trust
        self._trusted: dict[str, _Trusted] = {}

    @property
    def trust(self) -> TrustAnchors:
        return self._trust

    # -- updates --

    def update(self, country: str, signed: bytes, now_ms: int) -> bool:
        """Verify ``country``'s signed directory at ``now_ms`` and trust it if it is newer.

        True if it replaced the trusted one. A re-delivery of the trusted
        directory is a no-op (False). Anything else that is not a valid,
        newer directory of ``country`` raises, and the trusted one stays
        (§12: "On any failure it keeps the one it had").
        """
        check_country(country)
        trusted = self._trusted.get(country)
        if trusted is not None and signed == trusted.signed:
            # The same bytes passed steps 1-8 before, with the same (immutable) anchors;
            # only time has moved, so only step 9 is repeated.
            check_unexpired(trusted.directory, now_ms)
            return False
        # Steps 1-9; step 7 with the country asked for, step 8 against the trusted version.
        directory = verify_directory(
            signed,
            self._trust,
            now_ms,
            current_version=None if trusted is None else trusted.directory.version,
            current=None if trusted is None else trusted.directory,
            country=country,
        )
        if trusted is not None and directory == trusted.directory:
            return False  # step 8's re-delivery: nothing changes
        # §12: "On success the receiver replaces its trusted directory of that country".
        by_agency = MappingProxyType({e.agency: e for e in directory.entries})
        self._trusted[country] = _Trusted(directory, signed, by_agency)
        return True

    # -- what is trusted (as listed: no time, no validity checks) --

    def version(self, country: str) -> int | None:
        trusted = self._trusted.get(country)
        return None if trusted is None else trusted.directory.version

    def directory(self, country: str) -> Directory | None:
        trusted = self._trusted.get(country)
        return None if trusted is None else trusted.directory

    def signed(self, country: str) -> bytes | None:
        """The trusted directory's signed bytes, to store or pass on unchanged."""
        trusted = self._trusted.get(country)
        return None if trusted is None else trusted.signed

    def agencies(self, country: str) -> tuple[Principal, ...]:
        """Every agency listed for ``country``, revoked and expired ones included."""
        trusted = self._trusted.get(country)
        if trusted is None:
            return ()
        return tuple(e.principal for e in trusted.directory.entries)

    def entry(self, agency: Principal) -> DirectoryEntry:
        """The agency's entry as listed, for display and audit: no validity checks."""
        trusted = self._trusted.get(agency.country)
        entry = None if trusted is None else trusted.by_agency.get(str(agency))
        if entry is None:
            raise UnknownSenderError(f"{agency} is not in a directory")
        return entry

    # -- decisions, each at the caller's one reference time ``now_ms`` --

    def signing_key(self, sender: Principal, kid: bytes, now_ms: int) -> bytes:
        """The key ``sender`` signed with, if ``kid`` names one that is valid at ``now_ms``."""
        if sender.is_hub:
            # Rule 1: a hub's key is its trust anchor, whatever the time (anchors do not
            # expire with directories).
            key = self._trust.hub_key(sender.country)
            if not hmac.compare_digest(key_id(KeyAlg.ED25519, key), kid):
                raise UnknownSenderError(
                    f"{sender} has no signing key with key id {kid.hex()} in the federation file"
                )
            return key
        entry = self._active(sender, now_ms)  # rules 2.1-2.5
        # Rule 2.6: the current signing key.
        if hmac.compare_digest(entry.signing_key_id, kid):
            return entry.signing_key
        # Rule 2.7: a key replaced by rotation, until its valid_until.
        for previous in entry.previous_signing_keys:
            if hmac.compare_digest(key_id(KeyAlg.ED25519, previous.key), kid):
                if now_ms < previous.valid_until:
                    return previous.key
                raise UnknownSenderError(
                    f"{sender}'s signing key {kid.hex()} was replaced; "
                    f"accepted until {previous.valid_until}"
                )
        # Rule 2.8: no such key.
        raise UnknownSenderError(f"{sender} has no signing key with key id {kid.hex()}")

    def encryption_key(self, agency: Principal, now_ms: int) -> PublicIdentity:
        """Who to seal content keys to; refused for revoked or out-of-validity agencies."""
        if agency.is_hub:
            raise NotRecipientError(f"{agency} has no encryption key (hubs cannot read content)")
        return self._active(agency, now_ms).public  # rules 2.1-2.5

    def roles(self, agency: Principal, now_ms: int) -> frozenset[Role]:
        """The roles of an agency that is valid at ``now_ms`` (hubs have none)."""
        if agency.is_hub:
            return frozenset()
        return frozenset(self._active(agency, now_ms).roles)  # rules 2.1-2.5

    def check_may_send(self, sender: Principal, type_name: str, now_ms: int) -> None:
        """Refuse unless ``sender`` (agency or hub) may send ``type_name`` at ``now_ms``."""
        if sender.is_hub:
            if type_name not in HUB_MAY_SEND:
                raise UnauthorisedError(f"{sender} is a hub: it may send only receipts")
            return
        check_may_send(self.roles(sender, now_ms), type_name)

    def _active(self, agency: Principal, now_ms: int) -> DirectoryEntry:
        """Rules 2.1-2.5: the agency's entry, if it may sign or be sent to at ``now_ms``."""
        trusted = self._trusted.get(agency.country)
        # Rule 2.1: a directory of the agency's country has been verified.
        if trusted is None:
            raise UnknownSenderError(f"{agency} is unknown: no directory of {agency.country} yet")
        # Rule 2.2: and it has not expired. A frozen directory would keep revoked keys
        # alive: refuse rather than guess.
        directory = trusted.directory
        if now_ms >= directory.expires:
            raise DirectoryError(
                f"{directory.hub} directory version {directory.version} expired at "
                f"{directory.expires} and no newer one has arrived"
            )
        # Rule 2.3: the agency is listed.
        entry = trusted.by_agency.get(str(agency))
        if entry is None:
            raise UnknownSenderError(
                f"{agency} is not in {agency.country}'s directory (version {directory.version})"
            )
        # Rule 2.4: not revoked by then (revocation covers every key, current and previous).
        if entry.revoked is not None and entry.revoked.at <= now_ms:
            raise RevokedError(
                f"{agency} was revoked at {utc_text(entry.revoked.at)}: {entry.revoked.reason}"
            )
        # Rule 2.5: inside the entry's validity.
        if now_ms < entry.valid_from:
            raise RevokedError(f"{agency} is not valid before {entry.valid_from}")
        if now_ms >= entry.valid_until:
            raise RevokedError(f"{agency}'s directory entry ended at {entry.valid_until}")
        return entry
