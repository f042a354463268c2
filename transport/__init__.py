"""ixb NATS transport: what both the hub (``broker``) and the agency SDK (``agency_client``) need.

- :mod:`transport.connect`: one way to open a NATS connection (name,
  timeouts, reconnect policy, a one-line error log);
- :mod:`transport.streams`: JetStream stream and consumer names and the
  layout a hub creates (``INGRESS``, ``INBOX``, ``OUT_<PEER>``, ``IN_<PEER>``);
- :mod:`transport.fetch`: pulling from a consumer without nats-py's lingering;
- :mod:`transport.clock`: the wall clock in the protocol's unit (ms).

Contract: imports ``protocols`` and nats-py, never ``broker``,
``agency_client`` or ``ixb`` (checked by ``tests/test_imports.py``). Subject
names are wire-level and stay in :mod:`protocols.subjects`.
"""
