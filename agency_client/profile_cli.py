"""``ixb profile add|ls|use|show``: name agency profiles and pick the one in use."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agency_client.named_profiles import NamedProfiles, check_name
from agency_client.profile import PROFILE_ENV, load_profile
from protocols.errors import ConfigError
from transport.cliout import add_json, emit


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    profile = sub.add_parser(
        "profile",
        help="named profiles (like nats contexts): add, ls, use, show",
        description="Name your agency profiles and pick the one commands use, stored in "
        "$XDG_CONFIG_HOME/ixb/profiles.toml. --profile and $IXB_PROFILE still win.",
    ).add_subparsers(dest="cmd", required=True)
    add = profile.add_parser(
        "add",
        help="name a profile file",
        epilog="example: ixb profile add tha-dsi demo/agencies/THA-DSI-ATHD.toml",
    )
    add.add_argument("name")
    add.add_argument("file", type=Path)
    add_json(add)
    add.set_defaults(func=cmd_add)
    ls = profile.add_parser("ls", help="the named profiles; * marks the one in use")
    add_json(ls)
    ls.set_defaults(func=cmd_ls)
    use = profile.add_parser("use", help="use this profile from now on (unless overridden)")
    use.add_argument("name")
    add_json(use)
    use.set_defaults(func=cmd_use)
    show = profile.add_parser("show", help="which profile a command would use now, and why")
    show.add_argument("name", nargs="?", help="a named profile (default: the one in effect)")
    add_json(show)
    show.set_defaults(func=cmd_show)


def cmd_add(args: argparse.Namespace) -> int:
    name = check_name(args.name)
    load_profile(args.file)
    named = NamedProfiles.load()
    named.profiles[name] = str(args.file.resolve())
    named.save()
    path = str(args.file.resolve())
    emit(args, f"profile {name}: {path}", {"name": name, "file": path})
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    named = NamedProfiles.load()
    if args.json:
        rows = [
            {"name": n, "file": p, "current": n == named.current}
            for n, p in sorted(named.profiles.items())
        ]
        emit(args, "", {"current": named.current, "profiles": rows})
        return 0
    if not named.profiles:
        sys.stdout.write("no named profiles (ixb profile add NAME FILE)\n")
    for n, p in sorted(named.profiles.items()):
        sys.stdout.write(f"{'*' if n == named.current else ' '} {n:<20} {p}\n")
    return 0


def cmd_use(args: argparse.Namespace) -> int:
    named = NamedProfiles.load()
    named.path_of(args.name)
    named.current = args.name
    named.save()
    note = (
        f" (but $IXB_PROFILE={os.environ['IXB_PROFILE']} wins while set)"
        if os.environ.get("IXB_PROFILE")
        else ""
    )
    emit(
        args,
        f"using profile {args.name}{note}",
        {"current": args.name, "overridden_by_env": bool(note)},
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    named = NamedProfiles.load()
    if args.name is not None:
        path, why = named.path_of(args.name), f"named {args.name}"
    elif os.environ.get(PROFILE_ENV):
        path, why = Path(os.environ[PROFILE_ENV]), f"${PROFILE_ENV}"
    elif named.current is not None:
        path, why = named.path_of(named.current), f"selected: {named.current}"
    else:
        raise ConfigError(f"no profile: pass --profile, set {PROFILE_ENV} or ixb profile use NAME")
    profile = load_profile(path)
    data = {
        "file": str(path),
        "why": why,
        "agency": profile.agency.id,
        "key_file": str(profile.path(profile.agency.key_file)),
        "federation_file": str(profile.path(profile.agency.federation_file)),
        "nats_url": profile.nats.url,
    }
    width = max(len(k) for k in data)
    emit(args, "".join(f"{k:<{width}}  {v}\n" for k, v in data.items()), data)
    return 0
