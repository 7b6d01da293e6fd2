"""tickline's Python client: order entry (client/exchange.py) and a market-data book
replica (client/marketdata.py), both asyncio, both in the protocol's JSON form."""

from client.exchange import Exchange, OrderRejected, RequestFailed, connect
from client.marketdata import BookReplica, MarketData, market_data

__all__ = ["connect", "Exchange", "OrderRejected", "RequestFailed", "market_data", "MarketData", "BookReplica"]
