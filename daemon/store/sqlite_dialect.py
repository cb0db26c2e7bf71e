"""SQLite's function sets (:data:`SQLITE`): the ``sql`` of the SQLite owner.

Each namespace gathers one concern's functions from the SQLite table modules
(``orders_*.py``, ``trading_states.py``, ``marketdata_*.py``,
``deadletters_sqlite.py``, the pruning batches of ``maintenance.py``) under
the names the protocols of :mod:`daemon.store.dialect` declare; mypy checks
that every function matches its declaration.
"""

from __future__ import annotations

from typing import Final

from daemon.store import (
    deadletters_sqlite,
    leases,
    maintenance,
    marketdata_books,
    marketdata_gaps,
    marketdata_trades,
    orders_fills,
    orders_outbox,
    orders_queries,
    orders_rows,
    orders_transitions,
    trading_states,
)
from daemon.store.dialect import Dialect

__all__ = ["SQLITE"]


class _Orders:
    record_intents = staticmethod(orders_outbox.record_intents)
    insert_intents = staticmethod(orders_outbox.insert_intents)
    apply_transitions = staticmethod(orders_transitions.apply_transitions)
    update_progress = staticmethod(orders_transitions.update_progress)
    request_cancel = staticmethod(orders_transitions.request_cancel)
    cancel_unsent = staticmethod(orders_transitions.cancel_unsent)
    insert_fills = staticmethod(orders_fills.insert_fills)
    save_trading_state = staticmethod(trading_states.save_trading_state)
    get_intent = staticmethod(orders_rows.get_intent)
    load_intents = staticmethod(orders_queries.load_intents)
    non_terminal = staticmethod(orders_queries.non_terminal)
    history = staticmethod(orders_queries.history)
    fills_for = staticmethod(orders_fills.fills_for)
    filled_of_unfinished = staticmethod(orders_fills.filled_of_unfinished)
    positions = staticmethod(orders_fills.positions)
    find_by_venue_order_id = staticmethod(orders_queries.find_by_venue_order_id)
    load_trading_states = staticmethod(trading_states.load_trading_states)
    counts_by_state = staticmethod(orders_queries.counts_by_state)
    list_intents = staticmethod(orders_queries.list_intents)


class _Market:
    write_trades = staticmethod(marketdata_trades.write_trades)
    last_trade_id = staticmethod(marketdata_trades.last_trade_id)
    count_trades = staticmethod(marketdata_trades.count_trades)
    trade_ids = staticmethod(marketdata_trades.trade_ids)
    read_trades = staticmethod(marketdata_trades.read_trades)
    missing_ranges = staticmethod(marketdata_trades.missing_ranges)
    write_snapshots = staticmethod(marketdata_books.write_snapshots)
    read_snapshots = staticmethod(marketdata_books.read_snapshots)
    count_levels = staticmethod(marketdata_books.count_levels)
    read_checkpoint = staticmethod(marketdata_gaps.read_checkpoint)
    read_checkpoints = staticmethod(marketdata_gaps.read_checkpoints)
    move_checkpoint = staticmethod(marketdata_gaps.move_checkpoint)
    record_gap = staticmethod(marketdata_gaps.record_gap)
    record_resolved_gap = staticmethod(marketdata_gaps.record_resolved_gap)
    resolve_gap = staticmethod(marketdata_gaps.resolve_gap)
    list_gaps = staticmethod(marketdata_gaps.list_gaps)
    count_gaps = staticmethod(marketdata_gaps.count_gaps)


class _DeadLetters:
    add_letter = staticmethod(deadletters_sqlite.add_letter)
    list_letters = staticmethod(deadletters_sqlite.list_letters)
    get_letter = staticmethod(deadletters_sqlite.get_letter)
    count_letters = staticmethod(deadletters_sqlite.count_letters)
    record_failed_replay = staticmethod(deadletters_sqlite.record_failed_replay)
    remove_letter = staticmethod(deadletters_sqlite.remove_letter)
    purge_letters = staticmethod(deadletters_sqlite.purge_letters)


class _Prune:
    pairs = staticmethod(maintenance.pairs)
    prune_trades_batch = staticmethod(maintenance.prune_trades_batch)
    prune_snapshots_batch = staticmethod(maintenance.prune_snapshots_batch)


class _Leases:
    claim = staticmethod(leases.claim)
    release = staticmethod(leases.release)
    read_leases = staticmethod(leases.read_leases)
    check_fence = staticmethod(leases.check_fence)


#: SQLite's function sets.
SQLITE: Final = Dialect(
    name="sqlite",
    orders=_Orders(),
    market=_Market(),
    dead_letters=_DeadLetters(),
    prune=_Prune(),
    leases=_Leases(),
)
