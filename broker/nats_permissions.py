"""Who may do what on a country's nats-server: user names and subject permissions.

Pure: returns names and subject lists; :mod:`broker.natsplan` places them in
the config templates of ``deploy/nats/``. Per user of country ``CC``'s server:

- ``hub`` (account ``IXB``) and ``hub-link-<PEER>`` (account ``<PEER>_LINK``):
  no restriction inside their account; the hub is the only bridge between
  the two, and an account sees nothing of another;
- ``agency-<NAME>`` (``IXB``): publishes only its own ingress, its own
  lookup subject, the directory request and its own encryption-key update,
  pulls and acks only its own inbox consumer, receives only on its own reply
  prefix and its own serve subject (:func:`agency_publish_allow`,
  :func:`agency_subscribe_allow`), and answers a lookup it received on the
  request's reply subject once (``allow_responses``);
- ``leaf-<PEER>`` (``<PEER>_LINK``, leaf connections only): what the peer
  may send into us over the leaf (:func:`leaf_publish_allow`) minus
  :func:`leaf_deny_subjects`, which the dialing side also uses as its
  ``deny_imports``;
- ``sys`` (``SYS``): the system account, for monitoring tools.

``docs/nats-topology.md`` explains each rule; ``tests/test_nats_topology.py``
checks them on real servers.
"""

from __future__ import annotations

from protocols import subjects
from protocols.identifiers import Principal, check_country
from transport.streams import INBOX_STREAM, in_stream

HUB_USER = "hub"
SYSTEM_USER = "sys"
ROUTE_USER = "route"
"""What the nodes of a clustered country log into each other's route port as."""


def agency_user(name: str) -> str:
    return f"agency-{name}"


def link_user(peer: str) -> str:
    """The hub's user in the link account of ``peer``."""
    return f"hub-link-{check_country(peer)}"


def leaf_user(dialer: str) -> str:
    """The user ``dialer``'s server logs into a listening peer's leaf port with."""
    return f"leaf-{check_country(dialer)}"


def link_account(peer: str) -> str:
    """The account holding only the traffic between this country and ``peer``."""
    return f"{check_country(peer)}_LINK"


def agency_publish_allow(agency: Principal) -> list[str]:
    """Its own ingress and lookup subject, the directory request, its own encryption-key
    update (SPEC §12.1), and the pull API of its own inbox consumer."""
    consumer = f"{INBOX_STREAM}.{agency.name}"
    return [
        subjects.ingress(agency),
        subjects.lookup(agency),
        subjects.directory_request(agency.country),
        subjects.key_update(agency),
        f"$JS.API.CONSUMER.MSG.NEXT.{consumer}",
        f"$JS.API.CONSUMER.INFO.{consumer}",
        f"$JS.ACK.{consumer}.>",
    ]


def agency_subscribe_allow(agency: Principal) -> list[str]:
    """Its own reply prefix (replies, publish acks and pulled inbox messages) and its own
    serve subject (the lookups its hub hands it, SPEC §14)."""
    return [f"{subjects.reply_prefix(agency.name)}.>", subjects.serve(agency)]


AGENCY_RESPONSES = '{ max: 1, expires: "1m" }'
"""``allow_responses`` of an agency: one answer to each lookup it received, within a minute
(the hub stops waiting long before); no other publish right on anyone's reply subjects."""


def leaf_publish_allow(country: str, peer: str) -> list[str]:
    """What ``peer`` may send into ``country``'s link account over the leaf connection.

    Our JetStream API (its source of ``OUT_<peer>`` reads through it), flow
    control, acks and replies, the delivery subject of that source, the
    peer's lookups to us (``ixb.<peer>.lookup.<country>``) and its answers to
    ours (our link reply prefix, SPEC §14).
    """
    deliver = subjects.deliver(peer, country)
    return [
        subjects.link_lookup(peer, country),
        f"{subjects.link_reply_prefix(country, peer)}.>",
        f"{subjects.js_api(country)}.>",
        "$JS.FC.>",
        "$JS.ACK.>",
        "_INBOX.>",
        "$JSC.>",
        deliver,
        f"{deliver}.>",
    ]


def leaf_deny_subjects(country: str, peer: str) -> list[str]:
    """What the peer on a link may never send into ``country``'s link account.

    - stream administration on our JetStream domain: a peer cannot create,
      redefine, delete, purge, restore or snapshot our streams, nor delete
      messages (the peer's source needs only consumer calls on ``OUT_<peer>``);
    - anything about our ``IN_<peer>`` consumers (create, delete, pull, ack):
      only our hub reads what the peer sent us;
    - every ``ixb.<country>.…`` subject: no injection into ``OUT_<peer>``.

    Used both as the listening side's publish deny and as the dialing side's
    ``deny_imports`` (a remote has no allow list, so the deny does the work).
    """
    api = subjects.js_api(country)
    inbound = in_stream(peer)
    return [
        f"{api}.STREAM.CREATE.>",
        f"{api}.STREAM.UPDATE.>",
        f"{api}.STREAM.DELETE.>",
        f"{api}.STREAM.PURGE.>",
        f"{api}.STREAM.MSG.DELETE.>",
        f"{api}.STREAM.RESTORE.>",
        f"{api}.STREAM.SNAPSHOT.>",
        f"{api}.CONSUMER.*.{inbound}",
        f"{api}.CONSUMER.*.{inbound}.>",
        f"{api}.CONSUMER.*.*.{inbound}.>",
        f"$JS.ACK.{inbound}.>",
        f"{subjects.PREFIX}.{check_country(country)}.>",
    ]
