"""The federation version an agency accepted, kept beside its profile (``<CC>-<NAME>.federation``).

As a hub does (SPEC §12, Federation file versions): the configured file must
be the version held or its successor, signed by the threshold of the held
version; an older one is refused. With none held, the configured file is the
trust root.
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
        try:
            if check_successor(held, configured).redelivery:
                return configured
        except IxbError as exc:
            raise type(exc)(f"{source}: {exc.detail}") from None
    tmp = state.with_name(f".{state.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(render_federation_file(configured), encoding="utf-8")
        tmp.replace(state)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise IoError(f"cannot write {state}: {exc.strerror or exc}") from None
    return configured


def _parse(text: str, source: Path) -> FederationFile:
    try:
        return parse_federation_file(text)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.detail}") from None
