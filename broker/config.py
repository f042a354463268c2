"""The hub's one typed configuration: a TOML file plus ``IXB_HUB__…`` environment overrides.

Validated at start; any problem is a :class:`ConfigError` naming the bad key
(``hub.country``, ``links.MYS.password`` …), so an operator never has to
read a traceback to fix a deployment.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from protocols.deadlines import Tiers
from protocols.errors import ConfigError, IxbError
from protocols.identifiers import Principal, check_country, hub_of, parse_agency
from protocols.limits import MS_PER_DAY, MS_PER_HOUR, MS_PER_SECOND, Limits
from protocols.messages import MESSAGE_TYPES
from protocols.retention import Retention, make_retention
from protocols.roles import Role

ENV_PREFIX = "IXB_HUB__"

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class HubSection(_Strict, frozen=True):
    country: str
    key_file: str
    state_dir: str
    federation_file: str
    trust_dir: str = ""
    """What this hub came to trust and must not forget with its state: the federation
    version it accepted, and which peer logs it witnesses (witness pins). Default
    ``<state_dir>/trust``; keep it on another disk or backup than ``state_dir``."""
    passphrase_env: str = "IXB_PASSPHRASE"  # noqa: S105 - a variable name
    directory_ttl_hours: Annotated[int, msgspec.Meta(ge=1, le=24 * 90)] = 24 * 7
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    instance: Annotated[str, msgspec.Meta(pattern=r"^([A-Za-z0-9_-]{1,64})?$")] = ""
    """Set on each of several hub processes of one country (one name per process, each
    with its own ``state_dir``): one is active, the others stand by (``broker.lease``).
    Unset: this is the country's only hub process."""


class NatsSection(_Strict, frozen=True):
    url: str
    user: str | None = None
    password: str | None = None
    """Configs written before nkeys: the hub's NATS password. Without one, the hub logs in
    with the nkey sealed in its key file (label ``hub``)."""
    ca_file: str | None = None
    """CA bundle the server's certificate is verified against (relative: to the config's
    directory); unset: the system's CAs, if the server requires TLS."""
    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    """Copies the country's JetStream keeps of each stream: 1 on one server, 3 on a
    cluster of three (a quorum survives the loss of any one node). ``url`` then lists
    every node, comma-separated."""


class LinkSection(_Strict, frozen=True):
    user: str | None = None
    password: str | None = None
    """Configs written before nkeys; without, the nkey ``link/<PEER>`` of the hub's key file."""


class HttpSection(_Strict, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 0
    secure_cookies: bool = False
    """Set when a TLS proxy serves the pages: session cookies then carry ``Secure``."""
    trusted_proxies: tuple[str, ...] = ()
    """IP addresses of the reverse proxies in front of the pages: from them alone the
    client's address is taken from ``X-Forwarded-For`` (login throttling is per address)."""


class UserSection(_Strict, frozen=True):
    """A liaison officer or auditor allowed to read this hub's audit pages."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    role: Literal["liaison", "auditor"]
    password_hash: str
    """From ``ixb hub passwd`` (libsodium Argon2id); never the password itself."""


class PolicySection(_Strict, frozen=True):
    max_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 600
    burst: Annotated[int, msgspec.Meta(ge=1)] = 120
    exchange: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """Per peer country, the message types exchanged with it (both directions)."""


class AgencySection(_Strict, frozen=True):
    id: str
    roles: list[str]
    key: str
    """Key file of the agency; only its public part is read."""
    revoked: str | None = None
    """Reason, if the agency is revoked (from the hub's start; peers learn it in seconds)."""
    max_per_minute: Annotated[int, msgspec.Meta(ge=1)] | None = None
    burst: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """This agency's rate limit instead of ``[policy]``'s: an automated document
    registry answers every border desk of a region, so 600 a minute is far too few."""


class DeadlineSection(_Strict, frozen=True):
    """The answer times agreed with one peer country (SPEC §6); unset tiers keep the
    defaults. ``*_seconds`` replaces a tier with seconds, for drills and tests."""

    urgent_hours: Annotated[int, msgspec.Meta(ge=1, le=24 * 31)] | None = None
    high_days: Annotated[int, msgspec.Meta(ge=1, le=366)] | None = None
    normal_days: Annotated[int, msgspec.Meta(ge=1, le=366)] | None = None
    urgent_seconds: Annotated[int, msgspec.Meta(ge=1)] | None = None
    high_seconds: Annotated[int, msgspec.Meta(ge=1)] | None = None
    normal_seconds: Annotated[int, msgspec.Meta(ge=1)] | None = None

    def tiers(self, where: str) -> Tiers:
        """The tiers, or a ConfigError naming ``where`` when a tier is given twice."""
        chosen: dict[str, int] = {}
        for tier, unit, value in (
            ("urgent", "hours", self.urgent_hours),
            ("high", "days", self.high_days),
            ("normal", "days", self.normal_days),
        ):
            seconds = getattr(self, f"{tier}_seconds")
            if value is not None and seconds is not None:
                raise ConfigError(f"{where}: {tier}_{unit} and {tier}_seconds: give one")
            if seconds is not None:
                chosen[f"{tier}_ms"] = seconds * MS_PER_SECOND
            elif value is not None:
                chosen[f"{tier}_ms"] = value * (MS_PER_HOUR if unit == "hours" else MS_PER_DAY)
        return Tiers(**chosen)


class LookupSection(_Strict, frozen=True):
    """The synchronous path of document checks and person queries (SPEC §14)."""

    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 64
    """Lookups this hub handles at once at most (its agencies' and its peers'); beyond, it
    refuses at once with ``ixb.E_BUSY`` rather than queueing."""
    adaptive_limit: bool = True
    """Take fewer than ``max_in_flight`` while a queue stands (broker/limit.py), so an
    overloaded hub answers about as fast as an idle one and refuses the rest; off: always
    ``max_in_flight``, and overload latency ≈ ``max_in_flight`` ÷ throughput (64 at 150
    checks/s is 0.4 s)."""
    responder_timeout_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 2_000
    """How long the owner's hub waits for a responder before it queues the lookup in the
    owner's inbox (no responder at all: at once)."""
    peer_timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=120_000)] = 5_000
    """How long a hub waits for a peer hub's reply; longer than the peer's responder wait."""


class LimitsSection(_Strict, frozen=True):
    max_envelope_bytes: int = Limits().max_envelope_bytes
    max_recipients: int = Limits().max_recipients
    max_clock_skew_ms: int = Limits().max_clock_skew_ms
    max_ttl_ms: int = Limits().max_ttl_ms


class RetentionSection(_Strict, frozen=True):
    """How long delivered envelopes stay in this hub's streams (``INBOX``, links)."""

    default_days: Annotated[int, msgspec.Meta(ge=0, le=36500)] | None = None
    """Days for every type not in ``days``; unset: the built-in days per type."""
    days: dict[str, int] = msgspec.field(default_factory=dict)
    """Days per message type (``alert = 30``)."""
    period_minutes: Annotated[float, msgspec.Meta(gt=0, le=7 * 24 * 60)] = 60.0
    """How often the hub runs it (``ixb retention run`` runs it at once)."""

    def policy(self) -> Retention:
        return make_retention(self.days, self.default_days, "[retention] days")


class HubConfig(_Strict, frozen=True):
    hub: HubSection
    nats: NatsSection
    links: dict[str, LinkSection] = msgspec.field(default_factory=dict)
    http: HttpSection = msgspec.field(default_factory=HttpSection)
    policy: PolicySection = msgspec.field(default_factory=PolicySection)
    agency: list[AgencySection] = msgspec.field(default_factory=list)
    user: list[UserSection] = msgspec.field(default_factory=list)
    limits: LimitsSection = msgspec.field(default_factory=LimitsSection)
    retention: RetentionSection = msgspec.field(default_factory=RetentionSection)
    deadlines: dict[str, DeadlineSection] = msgspec.field(default_factory=dict)
    """Per peer country, the answer times of the agreement with it (both directions)."""
    lookup: LookupSection = msgspec.field(default_factory=LookupSection)
    base_dir: str = "."
    """Directory that relative paths are resolved against (the config file's)."""

    @property
    def country(self) -> str:
        return self.hub.country

    @property
    def hub_id(self) -> Principal:
        return hub_of(self.hub.country)

    def path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def nats_ca_file(self) -> Path | None:
        """``nats.ca_file`` resolved; the hub's own and its link connections use it."""
        return None if self.nats.ca_file is None else self.path(self.nats.ca_file)

    @property
    def trust_path(self) -> Path:
        """``hub.trust_dir``, else ``<state_dir>/trust``."""
        if self.hub.trust_dir:
            return self.path(self.hub.trust_dir)
        return self.path(self.hub.state_dir) / "trust"

    def wire_limits(self) -> Limits:
        return Limits(
            max_envelope_bytes=self.limits.max_envelope_bytes,
            max_recipients=self.limits.max_recipients,
            max_clock_skew_ms=self.limits.max_clock_skew_ms,
            max_ttl_ms=self.limits.max_ttl_ms,
        )

    def deadline_tiers(self) -> dict[str, Tiers]:
        """Peer country → the answer times agreed with it (validated at load)."""
        return {peer: d.tiers(f"deadlines.{peer}") for peer, d in self.deadlines.items()}

    def exchanged_types(self, peer: str) -> frozenset[str]:
        return frozenset(self.policy.exchange.get(peer, ()))

    def agency_roles(self) -> dict[Principal, tuple[Role, ...]]:
        return {parse_agency(a.id): tuple(Role(r) for r in a.roles) for a in self.agency}

    def rate_limits(self) -> dict[str, tuple[int, int]]:
        """Agency id → (per minute, burst), for agencies with their own limit."""
        policy = self.policy
        return {
            a.id: (a.max_per_minute or policy.max_per_minute, a.burst or policy.burst)
            for a in self.agency
            if a.max_per_minute is not None or a.burst is not None
        }

    def revoked(self) -> dict[Principal, str]:
        return {parse_agency(a.id): a.revoked for a in self.agency if a.revoked}


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """``IXB_HUB__NATS__URL=…`` sets ``nats.url``; values stay strings and are converted."""
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        node = raw
        for part in path[:-1]:
            node = node.setdefault(_existing_key(node, part), {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment {name}: {'.'.join(path)} is not a table")
        node[_existing_key(node, path[-1])] = value


def _existing_key(table: dict[str, Any], part: str) -> str:
    """Environment names are upper case; config keys are not (``links.MYS.password``)."""
    for key in table:
        if key.lower() == part.lower():
            return key
    return part.upper() if len(part) == 3 and part.isalpha() else part.lower()


def _validate(cfg: HubConfig) -> None:
    cfg.retention.policy()  # unknown types, days out of range: named at start
    try:
        check_country(cfg.hub.country)
    except IxbError:
        raise ConfigError(f"hub.country: {cfg.hub.country!r} is not an ISO 3166-1 code") from None
    for peer in list(cfg.links) + list(cfg.policy.exchange):
        try:
            check_country(peer)
        except IxbError:
            raise ConfigError(f"links/policy: {peer!r} is not a country code") from None
        if peer == cfg.hub.country:
            raise ConfigError(f"links.{peer}: a hub does not link to itself")
    for peer in cfg.deadlines:
        try:
            check_country(peer)
        except IxbError:
            raise ConfigError(f"deadlines.{peer}: not a country code") from None
        if peer == cfg.hub.country:
            raise ConfigError(f"deadlines.{peer}: agreements are with peer countries")
    cfg.deadline_tiers()
    for peer, types in cfg.policy.exchange.items():
        unknown = sorted(set(types) - set(MESSAGE_TYPES))
        if unknown:
            raise ConfigError(f"policy.exchange.{peer}: unknown message types {unknown}")
    for i, agency in enumerate(cfg.agency):
        try:
            principal = parse_agency(agency.id)
        except IxbError as exc:
            raise ConfigError(f"agency[{i}].id: {exc.detail}") from None
        if principal.country != cfg.hub.country:
            raise ConfigError(f"agency[{i}].id: {agency.id} is not in {cfg.hub.country}")
        for role in agency.roles:
            if role not in Role.__members__.values():
                raise ConfigError(f"agency[{i}].roles: unknown role {role!r}")
    for i, proxy in enumerate(cfg.http.trusted_proxies):
        try:
            ipaddress.ip_address(proxy)
        except ValueError:
            raise ConfigError(
                f"http.trusted_proxies[{i}]: {proxy!r} is not an IP address"
            ) from None
    if cfg.lookup.peer_timeout_ms <= cfg.lookup.responder_timeout_ms:
        raise ConfigError(
            "lookup.peer_timeout_ms: must exceed lookup.responder_timeout_ms (a peer hub waits"
            " that long for its responder before it answers)"
        )
    try:
        cfg.wire_limits()
    except ConfigError as exc:
        raise ConfigError(exc.detail) from None


def load_config(path: Path, env: Mapping[str, str] | None = None) -> HubConfig:
    """Read, override from the environment, validate: a ready config or a ConfigError."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    _apply_env(raw, os.environ if env is None else env)
    raw.setdefault("base_dir", str(path.resolve().parent))
    try:
        cfg = msgspec.convert(raw, HubConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {_humane(str(exc))}") from None
    _validate(cfg)
    return cfg


def _humane(message: str) -> str:
    """msgspec says ``… - at `$.links.MYS.user```; operators think in ``links.MYS.user``."""
    return message.replace("`$.", "`").replace("$.", "")
