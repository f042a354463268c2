"""An agency's self-service encryption-key update at its hub (SPEC §12.1), as a decision.

:func:`decide_key_update` takes the request's bytes, the live agencies, the
agency's last accepted update and ``now``, and returns the record to write, or
a typed error for the reply. The hub writes the record to its registry (with
a ``changes`` row naming the agency as actor: one ``policy_changed`` audit
entry) and issues its next directory version at once; see
:meth:`broker.hub.Hub.key_update`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from broker.registry import AgencyRecord
from protocols.directory import MAX_PREVIOUS_KEYS
from protocols.enckey import MIN_INTERVAL_MS, KeyUpdate, LastUpdate, parse_update, verify_update
from protocols.errors import RevokedError, UnauthorisedError, UnknownSenderError
from protocols.identifiers import Principal
from protocols.keys import PublicIdentity


def actor(agency: Principal) -> str:
    """The ``changes`` row's actor, and so the audit entry's: the agency itself."""
    return f"agency:{agency}"


def claimed_agency(country: str, name: str, data: bytes) -> Principal:
    """Step 2 of SPEC §12.1, first half: the update names the agency whose subject it came on.

    NATS lets agency ``CC/NAME`` publish only on its own subject; this makes the
    signature check below depend on that too, not on NATS alone.
    """
    update, _ = parse_update(data)
    agency = update.principal
    if agency.country != country or agency.name != name:
        raise UnauthorisedError(f"a key update for {agency} came on {country}/{name}'s subject")
    return agency


def decide_key_update(
    agency: Principal,
    data: bytes,
    agencies: Mapping[Principal, AgencyRecord],
    last: LastUpdate | None,
    now: int,
    *,
    min_interval_ms: int = MIN_INTERVAL_MS,
) -> tuple[KeyUpdate, AgencyRecord]:
    """Steps 2-5: the verified update and the agency's record with the new key listed."""
    rec = agencies.get(agency)
    if rec is None:
        raise UnknownSenderError(f"{agency} is not enrolled here")
    if rec.revoked is not None or rec.config_revoked:
        raise RevokedError(f"{agency} is revoked: it gets no new keys")
    old = rec.public
    update = verify_update(
        data, old.signing, old.encryption or b"", last, now, min_interval_ms=min_interval_ms
    )
    kept = [(k, u) for k, u in rec.previous_encryption if k != update.encryption_key]
    record = dataclasses.replace(
        rec,
        public=PublicIdentity(agency, old.signing, update.encryption_key),
        previous_encryption=((old.encryption or b"", now), *kept)[:MAX_PREVIOUS_KEYS],
    )
    return update, record
