"""The hub's tamper-evident audit log (see :mod:`broker.audit.log` for the contract).

- :mod:`.log`: :class:`AuditLog`, the one object the rest of the hub uses;
- :mod:`.records`: what is appended and read back, and the file's schema;
- :mod:`.storage`: leaves and Merkle tree nodes, roots, proofs, verification;
- :mod:`.index`: the postings, cases and clock order appends keep for search;
- :mod:`.search`: :class:`AuditQuery`, search and count;
- :mod:`.witness`: checkpoints, cosignatures, witnessed peer checkpoints, alarms.
"""
