"""Trading venues behind one interface (:class:`daemon.venues.base.Venue`).

``binance/`` speaks the Binance Spot REST and WebSocket protocol (Binance, its
spot testnet, and the bundled simulator in ``sim/``).
"""
