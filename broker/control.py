"""The hub's control plane: directories, checkpoints and cosignatures, as decisions.

Link items that are not messages carry a kind (``Ixb-Kind`` header): a peer's
signed directory, a peer's checkpoint publication to witness, a peer's
cosignature of our checkpoint, or a peer's conflict answer (the size of our
log it last cosigned, when we proved from another). :meth:`ControlPlane.decide`
takes one such item's bytes and the batch's ``now`` and returns a
:class:`ControlDecision`: what to publish back (a cosignature or a conflict
answer) and the durable writes (:class:`Writes`, each step done once), which
the hub runs in a worker thread before it acks the item; when the disk
refuses them it naks the item and runs the rest of the same writes when the
item comes back. The in-memory effect that
later decisions depend on (a peer directory's keys) happens at once, so a
directory counts for the messages after it in the same batch.

The same holds for this hub's own directory (:meth:`own_directory`). Nothing
here touches NATS; the hub executes the decisions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from broker.auditing import Alarm, Conflict, Cosigned, HubAudit
from broker.config import HubConfig
from broker.metrics import Metrics
from broker.plan import Publish, link_item
from broker.registry import AgencyRecord, config_agencies
from broker.store import HubStore
from broker.trust import held_federation
from protocols.audit import AuditEvent, make_entry
from protocols.directory import RevocationInfo, build_directory, entry_for, sign_directory
from protocols.errors import ConfigError, IxbError
from protocols.federation import (
    FederationFile,
    check_successor,
    parse_federation_file,
    render_federation_file,
)
from protocols.identifiers import Principal
from protocols.keys import Identity, PublicIdentity
from protocols.limits import MS_PER_DAY, MS_PER_HOUR
from protocols.trusted import TrustedDirectories
from transport.files import write_atomic

log = structlog.get_logger("ixb.hub")

KIND_HEADER = "Ixb-Kind"
KIND_DIRECTORY = "directory"
KIND_CHECKPOINT = "checkpoint"
KIND_COSIGNATURE = "cosignature"
KIND_WITNESS_SIZE = "witness-size"
KIND_FEDERATION = "federation"
AGENCY_VALIDITY_MS = 365 * MS_PER_DAY


class Writes:
    """Durable writes to run in order, off the event loop; each step is done once.

    A step the disk refuses raises, and calling again resumes with that step:
    those done before are not repeated, so a retry after a storage failure
    records no audit entry twice. Steps that describe a change in the audit
    log come before the state that makes the change take effect, so a crash
    between them repeats an entry at worst, and never loses one.
    """

    def __init__(self, *steps: Callable[[], object]) -> None:
        self._steps = list(steps)

    def __call__(self) -> None:
        while self._steps:
            self._steps[0]()
            del self._steps[0]


def writes(*steps: Callable[[], object]) -> Writes | None:
    """:class:`Writes` of ``steps``, or None when there is nothing to write."""
    return Writes(*steps) if steps else None


@dataclass(frozen=True, slots=True)
class ControlDecision:
    """What one control item causes: publishes, and durable writes to run off the event loop.

    ``writes`` that failed are called again, not decided again: the in-memory
    effect (a directory's keys) happened at once, and a decision taken again
    would find nothing left to write.
    """

    publishes: tuple[Publish, ...] = ()
    writes: Callable[[], object] | None = None


@dataclass(kw_only=True, eq=False, repr=False)  # holds keys and credentials: no repr
class ControlPlane:
    """Directory install and publishing, checkpoint witnessing, cosignatures for one hub."""

    config: HubConfig
    identity: Identity
    keys: TrustedDirectories
    audit: HubAudit
    store: HubStore
    agency_keys: Mapping[Principal, PublicIdentity]
    metrics: Metrics
    agencies: Mapping[Principal, AgencyRecord] | None = None
    """The live agencies (config and registry, :mod:`broker.registry`); None: the config's."""
    federation: FederationFile | None = None
    """The federation version in use (the anchors of ``keys``); None: the one in trust_dir."""

    def _federation_in_use(self) -> FederationFile | None:
        if self.federation is not None:
            return self.federation
        return held_federation(self.config.trust_path)

    @property
    def country(self) -> str:
        return self.config.country

    @property
    def peers(self) -> list[str]:
        return sorted(self.config.links)

    # --- our own directory ------------------------------------------------------------

    def own_directory(self, now: int) -> ControlDecision:
        """Sign the next version of this country's directory, install it, send it to every peer.

        Versions only go up, across restarts and long outages alike.
        """
        stored = self.store.directories().get(self.country)
        if stored is not None and self.keys.version(self.country) is None:
            with contextlib.suppress(IxbError):  # expired after a long outage: re-issued below
                self.keys.update(self.country, stored, now)
        previous = max(
            self.keys.version(self.country) or 0, self.store.directory_version(self.country) or 0
        )
        agencies = (
            self.agencies
            if self.agencies is not None
            else config_agencies(self.config, self.agency_keys)
        )
        entries = [
            entry_for(
                rec.public,
                rec.roles,
                valid_from=0,
                valid_until=now + AGENCY_VALIDITY_MS,
                revoked=rec.revoked or self._revocation(p, rec.config_revoked, now),
                previous_signing_keys=[k for k in rec.previous if k.valid_until > now],
            )
            for p, rec in sorted(agencies.items())
        ]
        directory = build_directory(
            self.config.hub_id,
            version=previous + 1,
            issued_ms=now,
            ttl_ms=self.config.hub.directory_ttl_hours * MS_PER_HOUR,
            entries=entries,
        )
        signed = sign_directory(directory, self.identity)
        self.keys.update(self.country, signed, now)
        version = directory.version
        entry = make_entry(
            str(self.config.hub_id), now, AuditEvent.DIRECTORY_PUBLISHED, detail=f"v{version}"
        )

        dedup = f"dir:{self.country}:{version}"
        publishes = tuple(
            link_item(self.country, peer, signed, dedup, KIND_DIRECTORY) for peer in self.peers
        )
        log.info("directory_published", version=version, agencies=len(entries))
        return ControlDecision(
            publishes,
            writes(
                lambda: self.audit.record([entry]),
                lambda: self.store.save_directory(self.country, version, signed),
            ),
        )

    def _revocation(self, agency: Principal, reason: str | None, now: int) -> RevocationInfo | None:
        """Revoked from the first directory that said so: a restart never moves the time."""
        if reason is None:
            return None
        with contextlib.suppress(IxbError):
            earlier = self.keys.entry(agency).revoked
            if earlier is not None:
                return earlier
        return RevocationInfo(at=now, reason=reason)

    def load_peer_directories(self, now: int) -> None:
        """The peers' directories kept from before a restart (expired ones are skipped)."""
        for country, signed in self.store.directories().items():
            if country != self.country:
                with contextlib.suppress(IxbError):
                    self.keys.update(country, signed, now)

    # --- link items ---------------------------------------------------------------------

    def decide(self, peer: str, kind: str, data: bytes, now: int) -> ControlDecision:
        """One control item from ``peer``'s link."""
        if kind == KIND_DIRECTORY:
            return self._install_directory(peer, data, now)
        if kind == KIND_CHECKPOINT:
            return self._witness(peer, data, now)
        if kind == KIND_COSIGNATURE:
            return self._cosignature(peer, data, now)
        if kind == KIND_WITNESS_SIZE:
            return self._witness_size(peer, data)
        if kind == KIND_FEDERATION:
            return self._federation_offered(peer, data)
        log.warning("unknown_kind", peer=peer, kind=kind[:40])
        return ControlDecision()

    # --- federation file versions ------------------------------------------------------

    def own_federation(self) -> tuple[Publish, ...]:
        """The federation version this hub holds, for every peer (sent with our directory).

        A peer that holds an older version learns that a newer one exists, and
        that it verifies; installing it stays its operator's act (SPEC §12,
        ``ixb federation install``, no restart).
        """
        held = self._federation_in_use()
        if held is None:
            return ()
        data = render_federation_file(held).encode("utf-8")
        dedup = f"fed:{self.country}:{held.version}:{held.digest()}"
        return tuple(
            link_item(self.country, peer, data, dedup, KIND_FEDERATION) for peer in self.peers
        )

    def _federation_offered(self, peer: str, data: bytes) -> ControlDecision:
        """A peer's federation version: if newer and verifying, keep it and tell the operator."""
        held = self._federation_in_use()
        refused: IxbError | None = None
        try:
            offered = parse_federation_file(data.decode("utf-8"))
            if held is None or offered.version <= held.version:
                return ControlDecision()  # ours, or older: nothing to do
            succession = check_successor(held, offered)
        except UnicodeDecodeError:
            refused = ConfigError("federation file: not UTF-8")
        except IxbError as exc:
            refused = exc
        if refused is not None or held is None:
            self.metrics.inc("ixb_federation_offers_total", peer=peer, result="refused")
            if refused is not None:
                log.error(
                    "federation_offer_refused", peer=peer, code=refused.code, detail=refused.detail
                )
            return ControlDecision()
        path = self.config.trust_path / f"federation-offered-v{offered.version}.toml"
        self.metrics.inc("ixb_federation_offers_total", peer=peer, result="newer")
        log.warning(
            "federation_version_available",
            peer=peer,
            version=offered.version,
            held=held.version,
            digest=offered.digest(),
            signers=list(succession.signers),
            changes=list(succession.changes),
            path=str(path),
            detail="verified against the version held: `ixb federation install` takes it into use",
        )
        text = render_federation_file(offered)
        return ControlDecision(writes=writes(lambda: write_atomic(path, text)))

    def _install_directory(self, peer: str, data: bytes, now: int) -> ControlDecision:
        hub = str(self.config.hub_id)
        try:
            changed = self.keys.update(peer, data, now)
        except IxbError as exc:
            entry = make_entry(
                hub,
                now,
                AuditEvent.DIRECTORY_REJECTED,
                code=exc.code,
                detail=exc.detail,
                peer=peer,
            )
            self.metrics.inc("ixb_directory_rejected_total", peer=peer, code=exc.code)
            log.warning("directory_rejected", peer=peer, code=exc.code, detail=exc.detail)
            return ControlDecision(writes=writes(lambda: self.audit.record([entry])))
        version = self.keys.version(peer)
        if not changed or version is None:
            return ControlDecision()
        installed = make_entry(
            hub, now, AuditEvent.DIRECTORY_INSTALLED, detail=f"v{version}", peer=peer
        )

        log.info("directory_installed", peer=peer, version=version)
        return ControlDecision(
            writes=writes(
                lambda: self.audit.record([installed]),
                lambda: self.store.save_directory(peer, version, data),
            )
        )

    def _witness(self, peer: str, data: bytes, now: int) -> ControlDecision:
        """A peer's checkpoint: verify, check it extends what we saw, cosign (or alarm)."""
        try:
            decision = self.audit.witness(peer, data, now)
        except IxbError as exc:
            self.metrics.inc("ixb_witness_refused_total", origin=peer, code=exc.code)
            log.warning("checkpoint_refused", origin=peer, code=exc.code, detail=exc.detail)
            return ControlDecision()
        if isinstance(decision, Alarm):
            self.metrics.inc(
                "ixb_witness_refused_total", origin=peer, code=decision.entry.code or ""
            )
            if not decision.repeat:
                self.metrics.inc("ixb_witness_alarms_total", origin=peer)
                log.error("witness_alarm", origin=peer, detail=decision.detail)
            else:
                self.metrics.inc("ixb_witness_alarm_repeats_total", origin=peer)
                if decision.repeats & (decision.repeats - 1) == 0:  # 1, 2, 4, 8 …: not each time
                    log.warning(
                        "witness_alarm_repeated",
                        origin=peer,
                        repeats=decision.repeats,
                        detail=decision.detail,
                    )
            return ControlDecision(writes=writes(*self.audit.steps(decision)))
        if isinstance(decision, Conflict):
            old_size, size = decision.refused
            self.metrics.inc("ixb_witness_conflicts_total", origin=peer)
            log.info(
                "checkpoint_conflict", origin=peer, old_size=old_size, size=size, ours=decision.size
            )
            answer = link_item(
                self.country,
                peer,
                decision.answer,
                f"wsize:{peer}:{self.country}:{decision.size}:{old_size}:{size}",
                KIND_WITNESS_SIZE,
            )
            return ControlDecision((answer,))
        cosignature = link_item(
            self.country,
            peer,
            decision.cosigned,
            f"cosig:{peer}:{self.country}:{decision.size}",
            KIND_COSIGNATURE,
        )
        return ControlDecision((cosignature,), writes(*self.audit.steps(decision)))

    def _witness_size(self, peer: str, data: bytes) -> ControlDecision:
        """``peer`` last cosigned our log at another size: prove from it next (no writes)."""
        try:
            holds = self.audit.accept_witness_size(peer, data)
        except IxbError as exc:
            log.warning("witness_size_refused", witness=peer, code=exc.code, detail=exc.detail)
            return ControlDecision()
        if holds.ours:
            log.info("witness_size", witness=peer, size=holds.size)
        else:
            self.metrics.inc("ixb_witness_holds_other_log_total", witness=peer)
            log.error(
                "witness_holds_other_log",
                witness=peer,
                size=holds.size,
                detail="the peer cosigned a checkpoint of ours that our log does not hold",
            )
        return ControlDecision()

    def _cosignature(self, peer: str, data: bytes, now: int) -> ControlDecision:
        try:
            cosigned: Cosigned = self.audit.accept_cosignature(peer, data, now)
        except IxbError as exc:
            log.warning("cosignature_refused", witness=peer, code=exc.code, detail=exc.detail)
            return ControlDecision()
        self.metrics.set("ixb_cosigned_size", cosigned.size, witness=peer)
        return ControlDecision(writes=writes(*self.audit.steps(cosigned)))
