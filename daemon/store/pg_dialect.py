"""PostgreSQL's function sets (:data:`POSTGRES`): the ``sql`` of the PostgreSQL owner.

Each namespace gathers one concern's functions from the ``pg_*.py`` table
modules under the names the protocols of :mod:`daemon.store.dialect`
declare (mypy checks every one). :func:`prepare_session` sets up what those
modules need on each new connection (the trade COPY's staging table).
"""

from __future__ import annotations

from typing import Any, Final

from daemon.store import (
    pg_deadletters,
    pg_leases,
    pg_maintenance,
    pg_marketdata_books,
    pg_marketdata_gaps,
    pg_marketdata_trades,
    pg_orders_fills,
    pg_orders_outbox,
    pg_orders_queries,
    pg_orders_rows,
    pg_orders_transitions,
    pg_trading_states,
)
from daemon.store.dialect import Dialect

__all__ = ["POSTGRES", "prepare_session"]


def prepare_session(conn: Any) -> None:
    """Per-connection setup of the table modules (outside a transaction)."""
    pg_marketdata_trades.prepare_session(conn)


class _Orders:
    record_intents = staticmethod(pg_orders_outbox.record_intents)
    insert_intents = staticmethod(pg_orders_outbox.insert_intents)
    apply_transitions = staticmethod(pg_orders_transitions.apply_transitions)
    update_progress = staticmethod(pg_orders_transitions.update_progress)
    request_cancel = staticmethod(pg_orders_transitions.request_cancel)
    cancel_unsent = staticmethod(pg_orders_transitions.cancel_unsent)
    insert_fills = staticmethod(pg_orders_fills.insert_fills)
    save_trading_state = staticmethod(pg_trading_states.save_trading_state)
    get_intent = staticmethod(pg_orders_rows.get_intent)
    load_intents = staticmethod(pg_orders_queries.load_intents)
    non_terminal = staticmethod(pg_orders_queries.non_terminal)
    history = staticmethod(pg_orders_queries.history)
    fills_for = staticmethod(pg_orders_fills.fills_for)
    filled_of_unfinished = staticmethod(pg_orders_fills.filled_of_unfinished)
    positions = staticmethod(pg_orders_fills.positions)
    find_by_venue_order_id = staticmethod(pg_orders_queries.find_by_venue_order_id)
    load_trading_states = staticmethod(pg_trading_states.load_trading_states)
    counts_by_state = staticmethod(pg_orders_queries.counts_by_state)
    list_intents = staticmethod(pg_orders_queries.list_intents)


class _Market:
    write_trades = staticmethod(pg_marketdata_trades.write_trades)
    last_trade_id = staticmethod(pg_marketdata_trades.last_trade_id)
    count_trades = staticmethod(pg_marketdata_trades.count_trades)
    trade_ids = staticmethod(pg_marketdata_trades.trade_ids)
    read_trades = staticmethod(pg_marketdata_trades.read_trades)
    missing_ranges = staticmethod(pg_marketdata_trades.missing_ranges)
    write_snapshots = staticmethod(pg_marketdata_books.write_snapshots)
    read_snapshots = staticmethod(pg_marketdata_books.read_snapshots)
    count_levels = staticmethod(pg_marketdata_books.count_levels)
    read_checkpoint = staticmethod(pg_marketdata_gaps.read_checkpoint)
    read_checkpoints = staticmethod(pg_marketdata_gaps.read_checkpoints)
    move_checkpoint = staticmethod(pg_marketdata_gaps.move_checkpoint)
    record_gap = staticmethod(pg_marketdata_gaps.record_gap)
    record_resolved_gap = staticmethod(pg_marketdata_gaps.record_resolved_gap)
    resolve_gap = staticmethod(pg_marketdata_gaps.resolve_gap)
    list_gaps = staticmethod(pg_marketdata_gaps.list_gaps)
    count_gaps = staticmethod(pg_marketdata_gaps.count_gaps)


class _DeadLetters:
    add_letter = staticmethod(pg_deadletters.add_letter)
    list_letters = staticmethod(pg_deadletters.list_letters)
    get_letter = staticmethod(pg_deadletters.get_letter)
    count_letters = staticmethod(pg_deadletters.count_letters)
    record_failed_replay = staticmethod(pg_deadletters.record_failed_replay)
    remove_letter = staticmethod(pg_deadletters.remove_letter)
    purge_letters = staticmethod(pg_deadletters.purge_letters)


class _Prune:
    pairs = staticmethod(pg_maintenance.pairs)
    prune_trades_batch = staticmethod(pg_maintenance.prune_trades_batch)
    prune_snapshots_batch = staticmethod(pg_maintenance.prune_snapshots_batch)


class _Leases:
    claim = staticmethod(pg_leases.claim)
    release = staticmethod(pg_leases.release)
    read_leases = staticmethod(pg_leases.read_leases)
    check_fence = staticmethod(pg_leases.check_fence)


#: PostgreSQL's function sets.
POSTGRES: Final = Dialect(
    name="postgres",
    orders=_Orders(),
    market=_Market(),
    dead_letters=_DeadLetters(),
    prune=_Prune(),
    leases=_Leases(),
)
