"""What an ``ixb`` command prints: its human text, or with ``--json`` one JSON object.

Every command that produces a result registers ``--json`` with :func:`add_json`
and prints through :func:`emit`, so the machine form is the same everywhere:

- exactly one JSON object on stdout (lists sit inside it, under a named key);
- every time is ISO 8601 UTC with milliseconds (:func:`~protocols.fields.utc_iso`,
  ``2026-11-30T05:12:00.123Z``), never raw milliseconds;
- ids and keys are text.

A failure keeps its contract: one line ``error ixb.E_X: …`` on stderr and a
non-zero exit. With ``--json`` the dispatcher also prints
:func:`error_document` on stdout, so a script always has one object to read.
Long-running commands are listed in :data:`JSON_EXEMPT` with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping

from protocols.errors import IxbError

JSON_HELP = "print one JSON object (times in ISO 8601 UTC) instead of text"

JSON_EXEMPT: Mapping[str, str] = {
    "hub run": "a service: it runs until stopped and logs JSON lines on stderr",
    "demo": "an interactive walkthrough that runs until stopped; its parts have --json",
}
"""Leaf commands without ``--json``, and why. (``agency respond`` also runs until
stopped; its ``--json`` prints one object when it starts answering.)"""


def add_json(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` the ``--json`` flag (read by :func:`emit`)."""
    parser.add_argument("--json", action="store_true", help=JSON_HELP)
    return parser


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def json_text(data: Mapping[str, object]) -> str:
    """``data`` as the one JSON document a command prints.

    ASCII only (``\\u`` escapes): a terminal or pipe in any locale can carry it.
    """
    return json.dumps(data, indent=1) + "\n"


def emit(args: argparse.Namespace, human: str, data: Mapping[str, object]) -> None:
    """Print ``human`` (a line break added), or ``data`` as JSON under ``--json``.

    ``data`` must already be plain JSON (times through ``utc_iso``): a value
    ``json`` cannot encode is a bug in the command, raised, not stringified.
    """
    if wants_json(args):
        sys.stdout.write(json_text(data))
    elif human:
        sys.stdout.write(human.rstrip("\n") + "\n")


def error_document(exc: IxbError) -> dict[str, object]:
    """What ``--json`` prints on stdout when a command fails (stderr has the line)."""
    return {"error": {"code": exc.code, "detail": exc.detail}}
