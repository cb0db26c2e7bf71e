"""The operator's window into tradingd: a small HTTP API on loopback.

The transport is the shared HTTP/1.1 server of :mod:`daemon.http` (h11 with a
thin Trio shell, plus a tiny router), which the exchange simulator uses too;
:mod:`daemon.admin.server` serves it under the admin's name
(:func:`~daemon.admin.server.serve_admin_http`). The endpoints (``/health``,
``/status``, ``/metrics``, ``/orders``, ``/trading``) are declared in
:mod:`daemon.admin.spec` terms and registered on a :class:`~daemon.http.Router`
by :mod:`daemon.admin.api`; which of them are *priority* (served from the
connection reserve) is the API's to say (:meth:`~daemon.admin.api.AdminAPI.is_priority`).
"""
