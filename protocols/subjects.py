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


def inbox_all(country: str) -> str:
    """Every local agency's inbox: the hub's INBOX stream captures these."""
    return f"{PREFIX}.{check_country(country)}.inbox.>"


def reply_prefix(name: str) -> str:
    """The NATS inbox prefix an agency connects with (nats-py ``inbox_prefix``).

    Replies, publish acks and pulled inbox messages arrive under it; the
    server lets agency ``NAME`` subscribe to ``_INBOX_<NAME>.>`` and nothing
    else, so the hub's NATS config and the agency client must agree on it.
    """
    return f"_INBOX_{name}"


def inbox(agency: Principal) -> str:
    """An agency's durable inbox (the only subject it may read)."""
    return f"{PREFIX}.{agency.country}.inbox.{agency.name}"


def audit_log(country: str) -> str:
    """The hub's own audit leaves, in batches (stream ``AUDIT``): no agency or peer sees it."""
    return f"{PREFIX}.{check_country(country)}.audit"


def cross_border(origin: str, destination: str) -> str:
    """Envelopes from ``origin``'s hub waiting to go to ``destination``'s hub."""
    return f"{PREFIX}.{check_country(origin)}.xb.{check_country(destination)}"


def deliver(origin: str, destination: str) -> str:
    """Delivery subject of the JetStream source from ``origin`` into ``destination``."""
    return f"{PREFIX}.deliver.{check_country(origin)}.{check_country(destination)}"


def directory_request(country: str) -> str:
    """Request subject where local agencies fetch every verified directory the hub holds."""
    return f"{PREFIX}.{check_country(country)}.directory.get"


def key_update(agency: Principal) -> str:
    """Where an agency asks its hub to list its new encryption key (request/reply, §12.1)."""
    return f"{PREFIX}.{agency.country}.keys.update.{agency.name}"


def key_update_all(country: str) -> str:
    return f"{PREFIX}.{check_country(country)}.keys.update.*"


LOOKUP_QUEUE = "ixb-lookup"
"""Queue group of the hub workers answering lookups (agencies' and peers')."""
SERVE_QUEUE = "ixb-serve"
"""Queue group of an agency's responders: several processes share its lookups."""


def lookup(agency: Principal) -> str:
    """Where an agency asks its own hub a lookup (NATS request/reply, SPEC §14)."""
    return f"{PREFIX}.{agency.country}.lookup.{agency.name}"


def lookup_all(country: str) -> str:
    """The hub's subscription over every local agency's lookups."""
    return f"{PREFIX}.{check_country(country)}.lookup.*"


def link_lookup(origin: str, destination: str) -> str:
    """A lookup ``origin``'s hub hands to ``destination``'s hub, in the pair's link account.

    Not under ``ixb.<origin>.``: a dialing server's leaf remote denies the
    listener everything under its own ``ixb.<CC>.`` (``deny_imports``), and
    nats-server applies that to the listener's subscription interest too, so
    a lookup from the dialer would find no responders (like
    :func:`deliver`, which sits beside the country prefixes for the same reason).
    """
    return f"{PREFIX}.lookup.{check_country(origin)}.{check_country(destination)}"


def serve(agency: Principal) -> str:
    """Where the hub hands a lookup to the agency that answers it (its responders' queue)."""
    return f"{PREFIX}.{agency.country}.serve.{agency.name}"


def link_reply_prefix(country: str, peer: str) -> str:
    """The NATS inbox prefix of ``country``'s hub on its link to ``peer``.

    A peer answers our lookups under it, so the leaf permissions can let it
    publish exactly there; no agency and no other link shares it.
    """
    return f"_IXBL_{check_country(country)}_{check_country(peer)}"


def js_api(domain: str) -> str:
    """The JetStream API prefix of a country's domain, as peers address it over a leaf."""
    return f"$JS.{check_country(domain)}.API"


def ingress_msg_id(message_id: str, digest: bytes) -> str:
    """The ``Nats-Msg-Id`` an agency publishes an envelope under (SPEC §8.1).

    The message id and the first 16 bytes of the envelope digest: a retry of
    the same bytes is stored once, and nobody without the envelope can take
    its place in the ingress stream's duplicate window.
    """
    return f"{message_id}:{digest[:16].hex()}"
