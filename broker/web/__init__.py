"""The hub's audit pages for liaison officers and auditors: server-rendered HTML, no scripts.

In: an aiohttp application and a :class:`~broker.web.view.LiaisonView` (what
the pages read: the hub's audit log, its readers, witness state, deadlines,
peers). Out: :func:`broker.web.app.setup_liaison` adds ``/login``,
``/logout`` and the ``/audit…`` pages. Guaranteed: every page needs a live
session; every page shown is recorded as an ``audit_read`` entry first;
every value is escaped by the templates and the CSP forbids scripts
outright. Why it is built this way: docs/design-decisions.md, "Liaison pages
and metrics".

Modules, one trust boundary each (this ``__init__`` imports none of them:
import from the module):

- :mod:`~broker.web.app`: ``setup_liaison``, the routes;
- :mod:`~broker.web.view`: what the hub supplies (a read-only Protocol);
- :mod:`~broker.web.auth`: passwords, sessions, CSRF, throttling (no HTTP);
- :mod:`~broker.web.login`, :mod:`~broker.web.site`: HTTP, headers, the frame;
- :mod:`~broker.web.pages`, :mod:`~broker.web.register`, :mod:`~broker.web.proof`,
  :mod:`~broker.web.oversight`: the pages;
- ``templates/`` and ``static/``: package data.
"""
