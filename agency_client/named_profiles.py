"""Named profiles, like the ``nats`` CLI's contexts (commands: ``agency_client.profile_cli``).

A small config file, ``$XDG_CONFIG_HOME/ixb/profiles.toml`` (default
``~/.config/ixb``), maps names to profile files and remembers the one in use.
It holds paths only, never a secret. Which profile a command uses: ``--profile``
(a path, or a name from this file), else ``$IXB_PROFILE``, else the one
selected with ``ixb profile use``.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from protocols.errors import ConfigError, IoError, UsageError

CONFIG_ENV = "XDG_CONFIG_HOME"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def config_file() -> Path:
    base = os.environ.get(CONFIG_ENV) or str(Path.home() / ".config")
    return Path(base) / "ixb" / "profiles.toml"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(f"profile name {name!r}: letters, digits, '.', '_' or '-' (at most 64)")
    return name


@dataclass
class NamedProfiles:
    """The names, their profile files, and the one in use (``current``)."""

    profiles: dict[str, str] = field(default_factory=dict)
    current: str | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> NamedProfiles:
        path = path or config_file()
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise IoError(f"cannot read {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        profiles = raw.get("profiles", {})
        current = raw.get("current")
        if not isinstance(profiles, dict) or not all(isinstance(v, str) for v in profiles.values()):
            raise ConfigError(f'{path}: profiles: a table of name = "path"')
        if current is not None and current not in profiles:
            raise ConfigError(f"{path}: current: {current!r} is not a profile name")
        return cls(dict(profiles), current)

    def save(self, path: Path | None = None) -> None:
        path = path or config_file()
        q = json.dumps  # a JSON string is a valid TOML basic string
        lines = [] if self.current is None else [f"current = {q(self.current)}", ""]
        lines.append("[profiles]")
        lines += [f"{q(name)} = {q(p)}" for name, p in sorted(self.profiles.items())]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            raise IoError(f"cannot write {path}: {exc.strerror or exc}") from None

    def path_of(self, name: str) -> Path:
        try:
            return Path(self.profiles[name])
        except KeyError:
            known = ", ".join(sorted(self.profiles)) or "none yet: ixb profile add NAME FILE"
            raise ConfigError(f"no profile named {name!r} (known: {known})") from None


def resolve(given: Path | None) -> Path | None:
    """``--profile`` as given (a file, or a name), else the selected one; None if neither."""
    if given is not None:
        if given.exists() or len(given.parts) != 1 or not _NAME.match(str(given)):
            return given
        named = NamedProfiles.load()
        return named.path_of(str(given)) if str(given) in named.profiles else given
    named = NamedProfiles.load()
    return None if named.current is None else named.path_of(named.current)
