"""The federation file: every member's hub signing key, the trust anchors (SPEC.md §12).

The file is exchanged out of band, as X-Road's global configuration or the
ICAO master list are, and is the same on every hub. :func:`parse_federation`
reads it into :class:`TrustAnchors` or raises
:class:`~protocols.errors.ConfigError` naming the bad key (``hub[1].signing_key``);
:func:`render_federation` writes it, with fingerprints to compare by phone.
A :class:`TrustAnchors` that exists is valid: its constructor checks every
rule the file's reader does.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from protocols.errors import ConfigError, IxbError, UnknownSenderError
from protocols.identifiers import check_country
from protocols.keys import PUBLIC_KEY_BYTES, KeyAlg, fingerprint, key_id

MAX_FEDERATION_CHARS: Final = 1024 * 1024

_FEDERATION_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 ._-]{0,62}[A-Za-z0-9])?")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class TrustAnchors:
    """The hub signing key of every member country. An instance that exists is valid."""

    name: str
    hubs: Mapping[str, bytes]
    _by_key_id: Mapping[bytes, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _FEDERATION_NAME.fullmatch(self.name):
            raise ConfigError(
                "federation.name: 1-64 of letters, digits, space, '.', '_', '-' "
                "(starting and ending with a letter or digit)"
            )
        if not self.hubs:
            raise ConfigError("hub: a federation needs at least one hub")
        hubs: dict[str, bytes] = {}
        by_kid: dict[bytes, str] = {}
        for country, key in sorted(self.hubs.items()):
            try:
                check_country(country)
            except IxbError as exc:
                raise ConfigError(f"hub {country!r}: {exc.detail}") from None
            if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_BYTES:
                raise ConfigError(f"hub {country}: signing key must be 32 bytes")
            kid = key_id(KeyAlg.ED25519, key)
            if kid in by_kid:
                raise ConfigError(f"hub {country}: same signing key as hub {by_kid[kid]}")
            hubs[country] = key
            by_kid[kid] = country
        object.__setattr__(self, "hubs", MappingProxyType(hubs))
        object.__setattr__(self, "_by_key_id", MappingProxyType(by_kid))

    @property
    def countries(self) -> tuple[str, ...]:
        return tuple(self.hubs)

    def hub_key(self, country: str) -> bytes:
        """The trust anchor of ``country``; a non-member has none."""
        try:
            return self.hubs[country]
        except KeyError:
            raise UnknownSenderError(
                f"{country[:8]}/HUB is not a hub of federation {self.name}"
            ) from None

    def country_of_key_id(self, kid: bytes) -> str | None:
        """Which member's hub key ``kid`` names, if any."""
        return self._by_key_id.get(kid)


def parse_federation(text: str) -> TrustAnchors:
    """Read the federation file (TOML); every error names the bad key (``hub[1].signing_key``).

    ``hub[i]`` counts the ``[[hub]]`` tables from 0 in file order.
    """
    if len(text) > MAX_FEDERATION_CHARS:
        raise ConfigError("federation file: larger than 1 MiB")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"federation file: not valid TOML ({exc})") from None
    _only_keys(doc, {"federation", "hub"}, "")
    fed = doc.get("federation")
    if not isinstance(fed, dict):
        raise ConfigError("federation: a [federation] table is required")
    _only_keys(fed, {"name"}, "federation.")
    name = fed.get("name")
    if not isinstance(name, str):
        raise ConfigError("federation.name: a string is required")
    hubs_doc = doc.get("hub")
    if not isinstance(hubs_doc, list) or not hubs_doc:
        raise ConfigError("hub: at least one [[hub]] table is required")
    hubs: dict[str, bytes] = {}
    first_at: dict[str, int] = {}
    key_at: dict[bytes, int] = {}
    for i, table in enumerate(hubs_doc):
        where = f"hub[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a [[hub]] table")
        _only_keys(table, {"country", "signing_key", "fingerprint"}, f"{where}.")
        country = _required_str(table, "country", where)
        try:
            check_country(country)
        except IxbError as exc:
            raise ConfigError(f"{where}.country: {exc.detail}") from None
        if country in first_at:
            raise ConfigError(f"{where}.country: {country} is already hub[{first_at[country]}]")
        hex_key = _required_str(table, "signing_key", where)
        if not _HEX_KEY.fullmatch(hex_key):
            raise ConfigError(f"{where}.signing_key: must be 64 hex digits (32 bytes)")
        key = bytes.fromhex(hex_key)
        kid = key_id(KeyAlg.ED25519, key)
        if kid in key_at:
            raise ConfigError(f"{where}.signing_key: same key as hub[{key_at[kid]}]")
        if "fingerprint" in table:
            stated = table["fingerprint"]
            actual = fingerprint(KeyAlg.ED25519, key)
            if stated != actual:
                raise ConfigError(
                    f"{where}.fingerprint: does not match signing_key (whose fingerprint is "
                    f"{actual}); check both with {country}'s hub operator"
                )
        hubs[country] = key
        first_at[country] = i
        key_at[kid] = i
    return TrustAnchors(name, hubs)


def _only_keys(table: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            shown = key[:64] if key.isprintable() else repr(key[:64])
            raise ConfigError(f"{prefix}{shown}: unknown key")


def _required_str(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: a string is required")
    return value


def render_federation(name: str, hubs: Mapping[str, bytes]) -> str:
    """The federation file for these hub keys, with fingerprints to compare out of band."""
    trust = TrustAnchors(name, hubs)
    lines = [
        "# ixb federation file: the trust anchors (hub signing keys) of every member.",
        "# Compare every fingerprint with that hub's operator, out of band, before use.",
        "[federation]",
        f'name = "{trust.name}"',
    ]
    for country, key in trust.hubs.items():
        lines += [
            "",
            "[[hub]]",
            f'country = "{country}"',
            f'signing_key = "{key.hex()}"',
            f'fingerprint = "{fingerprint(KeyAlg.ED25519, key)}"',
        ]
    return "\n".join(lines) + "\n"
