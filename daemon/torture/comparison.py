"""What well-known trading frameworks document about duplicate or lost orders after a crash.

A fixed part of the reliability report (``docs/RELIABILITY.md``), written from
the projects' public documentation and issue trackers (read in December 2026;
a thread may have moved on since). "Not documented" means nothing was found,
not that the feature is missing.
"""

from __future__ import annotations

from typing import Final

__all__ = ["COMPARISON"]

COMPARISON: Final = """\
| | Intent durable before the send? | After a restart | An order whose outcome is unknown | Duplicates or losses reported |
|---|---|---|---|---|
| NautilusTrader | Queued to the cache before the send; the Redis/PostgreSQL write is asynchronous, and the docs warn a crash can fall between the venue's receipt and durability [1] | Reconciles with the venue at start-up (on by default; the node does not start if it fails) [2] | Stays in flight and is polled; after the retries it is rejected locally (`INFLIGHT_TIMEOUT`), "not venue confirmation" [1] | Docs: some commands can be sent twice on Bybit, OKX, Kraken spot [1]; #3176 duplicates on restart, #5000 working orders dropped after SIGKILL [3] |
| Hummingbot | Tracked in memory before the request; tracking states saved to the database [4] | Restores saved in-flight orders, then polls them [4] | Marked failed after 3 "not found" answers (code) [5]; timeouts once counted as failures and caused duplicates (#493, fixed) [5] | #8457 (open): accepted orders dropped after DNS errors, an untracked position [5] |
| Freqtrade | No: the order row is written after `create_order` returns (code) [6] | Re-fetches the open orders its database knows [6] | Not documented; #3647: an order timed out locally but filled, the position untracked [7] | #3647, #4403, #11461 [7] |
| QuantConnect LEAN | "No automatic state management" of live strategies [8] | Holdings and open orders loaded from the brokerage at deploy [8] | IB: no answer within the timeout stops the algorithm; a timed-out market order may still fill (#8326) [9] | IB #242: order ids reused after a gateway restart; #9292 duplicate combo orders [9] |
| Jesse | Opt-in "persistency" (v0.34.0); without it everything is cancelled and closed at start [10] | Stop orders reconciled (changelog 2.1.3) [10] | Not documented | #576 crash at start with open positions (fixed 2.2.1) [10] |
| **tradingd** | **Yes**: `202` only after the intent is committed; the send section persists SENDING before the request | Start-up reconciliation before `READY=1`: every SENDING/UNKNOWN intent is queried; none is resent blindly | UNKNOWN, queried until the venue shows it (adopted) or it is proven absent after the visibility grace, then resent with the *same* client order id | This report: the counts below, from the venue's own audit |

[1] https://nautilustrader.io/docs/nightly/concepts/execution/policies ·
[2] https://nautilustrader.io/docs/latest/concepts/live ·
[3] https://github.com/nautechsystems/nautilus_trader/issues/3176, /issues/5000, /issues/3046 ·
[4] https://hummingbot.org/developers/connectors/architecture/order_lifecycle/,
https://github.com/hummingbot/hummingbot/issues/366 ·
[5] https://github.com/hummingbot/hummingbot/blob/master/hummingbot/connector/client_order_tracker.py,
https://github.com/hummingbot/hummingbot/issues/493, /issues/8457 ·
[6] https://www.freqtrade.io/en/stable/advanced-setup,
https://github.com/freqtrade/freqtrade/blob/develop/freqtrade/freqtradebot.py ·
[7] https://github.com/freqtrade/freqtrade/issues/3647, /issues/4403, /issues/11461 ·
[8] https://www.quantconnect.com/docs/v2/writing-algorithms/live-trading/key-concepts ·
[9] https://github.com/QuantConnect/Lean.Brokerages.InteractiveBrokers/issues/242, /issues/93,
https://github.com/QuantConnect/Lean/issues/8326, /issues/9292 ·
[10] https://docs.jesse.trade/docs/changelog, https://github.com/jesse-ai/jesse/issues/576
"""
