"""What the trade log answers, for both drivers: an owner's REPORTS, TICKER, KLINES and
TRADES on order entry, REPLAY of older trades on market data.

Each answer waits until the log covers what the asker has seen (`caught_up` returns that
journal seq): `tickline serve` waits for matching and the log's writer to catch up with
the journal; a cluster gateway goes by the last order its replica has heard of. Reads run
off the event loop (threads, aiosqlite).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, Callable

from exchange.instruments import Instrument
from journal.market import BestPrices, Market
from journal.queries import Report, TradeRow, reports_page, trades_from
from protocol import replies as R
from protocol.requests import MarketQuery


class History:
    def __init__(self, trades: Path, instruments: dict[str, Instrument], best: BestPrices, caught_up: Callable[[], Awaitable[int]]) -> None:
        self.trades = trades
        self.caught_up = caught_up
        self.market = Market(trades, instruments, best)
        self._opening = asyncio.Lock()

    async def reports(self, owner: str, since: int) -> tuple[list[Report], int, bool]:
        """A page of the owner's reports caused by commands after since, the seq they run
        through, and whether there are more (journal/queries.py reports_page)."""
        through = await self.caught_up()
        return await asyncio.to_thread(reports_page, self.trades, owner, since, through)

    async def answer(self, query: MarketQuery) -> R.Reply:
        """TICKER, KLINES, TRADES."""
        await self.caught_up()
        if self.market.db is None:
            async with self._opening:  # the log's file may be made later (a cluster's trade log role)
                if self.market.db is None:
                    await self.market.open()
        return await self.market.answer(query)

    async def older_trades(self, symbol: str, from_seq: int) -> list[TradeRow]:
        """REPLAY: a symbol's trades from a market-data seq on."""
        return await asyncio.to_thread(trades_from, self.trades, symbol, from_seq)

    async def close(self) -> None:
        await self.market.close()
