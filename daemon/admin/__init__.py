"""The operator's window into tradingd: a small HTTP API on loopback.

:mod:`daemon.admin.http` is the transport — an HTTP/1.1 server on h11 (the
sans-IO protocol core) with a thin Trio shell, plus a tiny router. It is chosen
over hypercorn because the admin API is a handful of JSON/text endpoints: h11
gives exact control over every deadline and limit (request, idle, body and
header size, connection count), there is no ASGI layer or second config loader
to reconcile with ours, and every byte of I/O runs as an ordinary Trio task, so
a slow or hostile client can never block the event loop. The endpoints
(``/health``, ``/status``, ``/metrics``, ``/orders``) are registered on a
:class:`~daemon.admin.http.Router` by the modules that own the data.
"""
