"""The admin API's HTTP server: :func:`daemon.http.serve_http` under the admin's names.

The shared server knows nothing of the admin API; this module gives it the
admin's name in log lines (``admin HTTP: ...``) and the answer a non-priority
request gets from the connection reserve, which names the admin's priority
routes (:meth:`daemon.admin.api.AdminAPI.is_priority` decides which they are).
Every other argument — the handler, the address, the limits from ``[admin]``,
``priority``, ``host_names`` — is the caller's, as for
:func:`~daemon.http.serve_http`.
"""

from __future__ import annotations

import functools
from typing import Final

from daemon.http import serve_http

__all__ = ["ADMIN_BUSY_MESSAGE", "ADMIN_SERVER_NAME", "serve_admin_http"]

#: How the admin server names itself in its log lines.
ADMIN_SERVER_NAME: Final = "admin HTTP"
#: The ``503`` answer to a non-priority request on a reserve connection.
ADMIN_BUSY_MESSAGE: Final = (
    "server busy: only priority requests (health, status, trading switches) are served right now"
)

#: :func:`daemon.http.serve_http` with the admin's name and busy message.
serve_admin_http: Final = functools.partial(
    serve_http, name=ADMIN_SERVER_NAME, busy_message=ADMIN_BUSY_MESSAGE
)
