"""The operator's handle on the durable dead letters: ``tradingd dead-letters``.

The control socket hands the ``dead-letters`` command here
(:func:`handle_dead_letters_command`); the letters themselves are kept by
:class:`~daemon.store.deadletters.SqliteDeadLetterStore` (``store.dead_letters``),
reached through the :class:`~daemon.resilience.DeadLetterStore` protocol.

Control-socket messages (one JSON object; the answer always has ``"ok"``)::

    {"cmd": "dead-letters", "action": "list",
     "source": "marketdata.NAME.ingest", "after_id": 0, "limit": 100}   (all optional)
    {"cmd": "dead-letters", "action": "show", "id": 7}
    {"cmd": "dead-letters", "action": "purge",
     "ids": [7, 8], "source": "...", "failed_before": <unix time>, "all": true}
       (at least one; letters matching every given filter are deleted)
    {"cmd": "dead-letters", "action": "replay", "ids": [7] | "source": "...", "dry_run": false}
       (answered by :func:`daemon.replay.handle_replay`, which needs the order
       pipeline and the market tables; this module never sees it)

``list`` answers one page of at most 1000 letters (payloads can be large).
Arguments of the wrong type or range raise
:class:`~daemon.errors.RequestError`, which the control server answers
``ok: false`` listing every problem; while the store is not open the answer
is ``{"ok": false, "error": "the store is not open"}``.
"""

from __future__ import annotations

import logging
from typing import Any

from daemon.control import Args, shown
from daemon.resilience import DeadLetterStore

__all__ = ["handle_dead_letters_command"]

# The daemon's logger: the line an operator sees is the same as before this
# module had its own home.
log = logging.getLogger("tradingd.app")

_ACTIONS = "list, show, purge, replay"


async def handle_dead_letters_command(
    letters: DeadLetterStore | None, message: dict[str, Any]
) -> dict[str, Any]:
    """list / show / purge the durable dead letters (``letters``: None while the store is down)."""
    action = message.get("action")
    if action == "list":
        args = Args(message, known=("action", "source", "after_id", "limit"))
        source = args.string("source")
        after_id = args.integer("after_id")
        # One page: at most 1000 letters (payloads can be large).
        limit = args.integer("limit", lo=1, hi=1000, default=100)
    elif action == "show":
        args = Args(message, known=("action", "id"))
        letter_id = args.integer("id", required=True)
    elif action == "purge":
        args = Args(message, known=("action", "ids", "source", "failed_before", "all"))
        ids = args.integers("ids")
        source = args.string("source")
        before = args.number("failed_before", lo=-1e12, hi=1e12)
        everything = args.flag("all")
    else:
        return {
            "ok": False,
            "error": f"unknown dead-letters action {shown(action)} (one of: {_ACTIONS})",
        }
    args.check()
    if letters is None:
        return {"ok": False, "error": "the store is not open"}
    if action == "list":
        assert limit is not None
        found = await letters.list(source=source, after_id=after_id, limit=limit)
        return {"ok": True, "letters": [letter.to_dict() for letter in found]}
    if action == "show":
        assert letter_id is not None
        letter = await letters.get(letter_id)
        if letter is None:
            return {"ok": False, "error": f"no dead letter {letter_id}"}
        return {"ok": True, "letter": letter.to_dict()}
    if not (ids or source or before is not None or everything):
        return {"ok": False, "error": "say which letters: ids, source, age, or all"}
    count = await letters.purge(letter_ids=ids, source=source, failed_before=before)
    log.info("purged %d dead letter(s) on request", count)
    return {"ok": True, "purged": count}
