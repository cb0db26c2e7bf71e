"""The HTTP/1.1 server shared by the admin API and the exchange simulator.

h11 (the sans-IO protocol core) with a thin Trio shell, plus a tiny router.
It is chosen over hypercorn because both users are a handful of JSON/text
endpoints on loopback: h11 gives exact control over every deadline and limit
(request, idle, body and header size, connection count), there is no ASGI
layer or second config loader to reconcile with ours, and every byte of I/O
runs as an ordinary Trio task, so a slow or hostile client can never block the
event loop.

* :mod:`daemon.http.messages` — the values: :class:`Request`,
  :class:`Response`, :class:`HTTPError`, :func:`error_response`;
* :mod:`daemon.http.routing` — :class:`Router`, dispatch on method and path;
* :mod:`daemon.http.server` — :func:`serve_http` (sockets, keep-alive, the
  connection lifecycle), with :mod:`daemon.http.admission` (the limits, the
  connection pool and its reserve), :mod:`daemon.http.reading` (one request
  in, under its deadlines) and :mod:`daemon.http.writing` (one response out);
* :mod:`daemon.http.hostcheck` — :class:`HostCheck`, the ``Host`` header check.

Its users: :mod:`daemon.admin` (the operator's API, served by
:func:`daemon.admin.server.serve_admin_http`) and :mod:`daemon.venues.sim`
(the simulator's REST API). The server knows neither: which requests are
priority, and how it names itself, are parameters.
"""

from daemon.http.hostcheck import HostCheck
from daemon.http.messages import (
    MAX_JSON_DEPTH,
    Handler,
    HTTPError,
    Request,
    Response,
    error_response,
)
from daemon.http.routing import Router
from daemon.http.server import serve_http
from daemon.http.writing import SERVER_NAME

__all__ = [
    "MAX_JSON_DEPTH",
    "SERVER_NAME",
    "HTTPError",
    "Handler",
    "HostCheck",
    "Request",
    "Response",
    "Router",
    "error_response",
    "serve_http",
]
