"""An agency's profile: who it is, where its key and hub are. Created by ``ixb agency enroll``."""

from __future__ import annotations

import enum
import json
import os
import tomllib
from pathlib import Path
from typing import Annotated

import msgspec

from agency_client.named_profiles import resolve
from protocols.errors import ConfigError, IoError, IxbError
from protocols.identifiers import Principal, parse_agency
from protocols.retention import Retention, make_retention

PROFILE_ENV = "IXB_PROFILE"


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class AgencySection(_Strict, frozen=True):
    id: str
    key_file: str
    federation_file: str
    passphrase_env: str = "IXB_PASSPHRASE"  # noqa: S105 - a variable name
    encryption_rotation_hours: Annotated[float, msgspec.Meta(ge=0, le=24 * 365)] = 24.0
    """A new encryption key when the current one is this old (0: never on a schedule)."""
    encryption_key_grace_hours: Annotated[float, msgspec.Meta(ge=0, le=24 * 90)] = 48.0
    """How long a replaced encryption key is kept, at least, before it is destroyed."""


class NatsSection(_Strict, frozen=True):
    url: str
    user: str | None = None
    password: str | None = None
    """Profiles written before nkeys: the NATS password. Without one, the agency logs in
    with the nkey sealed in its key file (``ixb agency enroll``, ``ixb keys new``)."""
    ca_file: str | None = None
    """CA bundle the hub's NATS server is verified against (relative: to the profile's
    directory); unset: the system's CAs, if the server requires TLS."""


class StoreSection(_Strict, frozen=True):
    content_days: Annotated[int, msgspec.Meta(ge=0, le=36500)] | None = None
    """Days the content of a received message is kept (0: for ever) for every type not in
    ``days``; its metadata stays. Unset: the built-in days per type
    (:data:`protocols.retention.DEFAULT_DAYS`)."""
    days: dict[str, int] = msgspec.field(default_factory=dict)
    """Days per message type (``alert = 30``), over the default."""

    def retention(self) -> Retention:
        return make_retention(self.days, self.content_days, "[store] days")


class UnknownPolicy(enum.StrEnum):
    ANSWER = "answer"
    """Answer ``unknown`` automatically."""
    ASK_HUMAN = "ask_human"
    """Leave the check in the human queue (``ixb queue list``)."""


class RegistrySection(_Strict, frozen=True):
    """The document authority's registry, for ``ixb agency respond`` and ``ixb registry``."""

    source: str | None = None
    """``sqlite:PATH``, ``json:PATH`` or ``python:MODULE:FACTORY``; unset: the embedded
    SQLite registry ``<CC>-<NAME>.documents.sqlite`` beside the profile."""
    unknown: UnknownPolicy = UnknownPolicy.ANSWER
    """What the responder does when the registry cannot decide."""


class QueueSection(_Strict, frozen=True):
    officer: str | None = None
    """Who answers from the human queue (``ixb queue answer``), unless ``--officer``."""


class Profile(_Strict, frozen=True):
    agency: AgencySection
    nats: NatsSection
    store: StoreSection = StoreSection()
    registry: RegistrySection = RegistrySection()
    queue: QueueSection = QueueSection()
    base_dir: str = "."

    @property
    def principal(self) -> Principal:
        return parse_agency(self.agency.id)

    def path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def nats_ca_file(self) -> Path | None:
        return None if self.nats.ca_file is None else self.path(self.nats.ca_file)


def load_profile(path: Path | None) -> Profile:
    """``path`` (a file or a profile name), else ``$IXB_PROFILE``, else the named profile
    in use (``ixb profile use``); a ConfigError naming what is wrong."""
    if path is None:
        env = os.environ.get(PROFILE_ENV)
        path = Path(env) if env else resolve(None)
        if path is None:
            raise ConfigError(
                f"no profile: pass --profile, set {PROFILE_ENV} or select one: ixb profile use NAME"
            )
    else:
        path = resolve(path) or path
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise IoError(f"cannot read profile {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    raw.setdefault("base_dir", str(path.resolve().parent))
    try:
        profile = msgspec.convert(raw, Profile)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {str(exc).replace('$.', '')}") from None
    try:
        profile.principal  # noqa: B018 - validates the id
    except IxbError as exc:
        raise ConfigError(f"{path}: agency.id: {exc.detail}") from None
    try:
        profile.store.retention()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.detail}") from None
    return profile


def render_profile(
    *,
    agency: str,
    key_file: str,
    federation_file: str,
    url: str,
    ca_file: str | None = None,
) -> str:
    """The TOML text of a profile: no secret (the NATS nkey is sealed in the key file)."""
    q = json.dumps  # a JSON string is a valid TOML basic string
    ca = "" if ca_file is None else f"ca_file = {q(ca_file)}\n"
    return (
        f"[agency]\nid = {q(agency)}\nkey_file = {q(key_file)}\n"
        f"federation_file = {q(federation_file)}\n\n"
        f"[nats]\nurl = {q(url)}\n{ca}"
    )
