"""The federation version an agency accepted, kept beside its profile (``<CC>-<NAME>.federation``).

As a hub does (SPEC §12, Federation file versions): the configured file must
be the version held or its successor, signed by the threshold of the held
version; an older one is refused, unless it is a version this agency held
before and replaced by one its hub offered (:func:`learn_federation`). With
none held, the configured file is the trust root.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from protocols.errors import ConfigError, IoError, IxbError
from protocols.federation import (
    FederationFile,
    check_successor,
    parse_federation_file,
    render_federation_file,
)


def state_path(profile_dir: Path, country: str, name: str) -> Path:
    return profile_dir / f"{country}-{name}.federation"


def adopt_federation(state: Path | None, text: str, source: Path) -> FederationFile:
    """The configured file if it may be trusted; kept in ``state`` (None: nothing held)."""
    configured = _parse(text, source)
    if state is None:
        return configured
    try:
        held_text: str | None = state.read_text(encoding="utf-8")
    except FileNotFoundError:
        held_text = None
    except (OSError, UnicodeDecodeError) as exc:
        raise IoError(f"cannot read {state}: {exc}") from None
    if held_text is not None:
        held = _parse(held_text, state)
        if configured.version < held.version:
            kept = _archived(state, configured.version)
            if kept is not None and kept.same_version(configured):
                return held  # learned from the hub since: the configured file is stale
        try:
            if check_successor(held, configured).redelivery:
                return configured
        except IxbError as exc:
            raise type(exc)(f"{source}: {exc.detail}") from None
    _write(state, configured)
    return configured


def learn_federation(
    state: Path | None, held: FederationFile, offered: bytes
) -> FederationFile | None:
    """The version the hub answered, if it is the successor of ``held`` (None: ``held``
    stays). Kept in ``state`` (``held`` beside it, so the configured file may stay
    behind); refusals raise, as :func:`adopt_federation`'s do."""
    if not offered:
        return None  # a hub that does not answer the request
    try:
        new = parse_federation_file(offered.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("the hub's federation file: not UTF-8") from None
    if new.version <= held.version:
        return None
    check_successor(held, new)
    if state is not None:
        _write(_archive_path(state, held.version), held)
        _write(state, new)
    return new


def _archive_path(state: Path, version: int) -> Path:
    return state.with_name(f"{state.name}-v{version}")


def _archived(state: Path, version: int) -> FederationFile | None:
    try:
        return parse_federation_file(_archive_path(state, version).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, IxbError):
        return None


def _write(path: Path, fed: FederationFile) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(render_federation_file(fed), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise IoError(f"cannot write {path}: {exc.strerror or exc}") from None


def _parse(text: str, source: Path) -> FederationFile:
    try:
        return parse_federation_file(text)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.detail}") from None
