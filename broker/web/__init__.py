"""The hub's audit pages for liaison officers and auditors: server-rendered HTML, no scripts.

In: an aiohttp application and a :class:`LiaisonView` (what the pages read:
the hub's audit log, its readers, witness state, deadlines, peers).
Out: :func:`setup_liaison` adds ``/login``, ``/logout`` and the ``/audit…``
pages. Guaranteed: every page needs a live session; every page shown is
recorded as an ``audit_read`` entry first; every value is escaped by the
templates and the CSP forbids scripts outright. Why it is built this way:
docs/design-decisions.md, "Liaison pages and metrics".

Modules, one trust boundary each: :mod:`~broker.web.view` (what the hub
supplies), :mod:`~broker.web.auth` (passwords, sessions, CSRF, throttling; no
HTTP), :mod:`~broker.web.login` and :mod:`~broker.web.site` (HTTP, headers,
the page frame), :mod:`~broker.web.pages` and :mod:`~broker.web.oversight`
(the pages), ``templates/`` and ``static/`` (package data).
"""

from __future__ import annotations

from broker.web.app import setup_liaison
from broker.web.auth import check_password, hash_password
from broker.web.limits import LIMITS, WebLimits
from broker.web.site import LIAISON, SECURITY_HEADERS
from broker.web.view import (
    AuditReader,
    DeadlineRow,
    LiaisonContext,
    LiaisonView,
    ReconcileReport,
    UserRecord,
    WitnessRow,
)

__all__ = [
    "LIAISON",
    "LIMITS",
    "SECURITY_HEADERS",
    "AuditReader",
    "DeadlineRow",
    "LiaisonContext",
    "LiaisonView",
    "ReconcileReport",
    "UserRecord",
    "WebLimits",
    "WitnessRow",
    "check_password",
    "hash_password",
    "setup_liaison",
]
