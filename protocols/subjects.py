"""NATS subject names, one function each, so no other module spells a subject.

Tokens come from validated identifiers (:mod:`protocols.identifiers`), whose
grammar excludes ``.``, ``*``, ``>`` and white space: a subject built here can
never contain a wildcard or an extra token.
"""

from __future__ import annotations

from protocols.identifiers import Principal, check_country

PREFIX = "ixb"


def ingress(agency: Principal) -> str:
    """Where an agency publishes envelopes to its own hub (its only publish right)."""
    return f"{PREFIX}.{agency.country}.ingress.{agency.name}"


def ingress_all(country: str) -> str:
    """The hub's subscription over every local agency's ingress."""
    return f"{PREFIX}.{check_country(country)}.ingress.*"


def inbox(agency: Principal) -> str:
    """An agency's durable inbox (the only subject it may read)."""
    return f"{PREFIX}.{agency.country}.inbox.{agency.name}"


def receipts(agency: Principal) -> str:
    """Receipts for what an agency sent: hub decisions and recipients' answers."""
    return f"{PREFIX}.{agency.country}.receipts.{agency.name}"


def cross_border(origin: str, destination: str) -> str:
    """Envelopes from ``origin``'s hub waiting to go to ``destination``'s hub."""
    return f"{PREFIX}.{check_country(origin)}.xb.{check_country(destination)}"


def deliver(origin: str, destination: str) -> str:
    """Delivery subject of the JetStream source from ``origin`` into ``destination``."""
    return f"{PREFIX}.deliver.{check_country(origin)}.{check_country(destination)}"


def audit_checkpoint(country: str) -> str:
    """Where a hub publishes its signed audit checkpoints for witnesses."""
    return f"{PREFIX}.{check_country(country)}.audit.checkpoint"


def directory(country: str) -> str:
    """Where a hub publishes its signed agency directory."""
    return f"{PREFIX}.{check_country(country)}.directory"


def directory_request(country: str) -> str:
    """Request subject where local agencies fetch every verified directory the hub holds."""
    return f"{PREFIX}.{check_country(country)}.directory.get"
