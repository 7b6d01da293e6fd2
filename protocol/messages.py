"""The exchange's vocabulary: every command and event as a frozen msgspec Struct.

Prices and quantities here are integers: ticks and lots of the symbol's instrument.
Decimal strings exist only at the edges (the wire codecs), converted by the instrument.

Commands and events are tagged unions, so one msgspec encoder/decoder serves the
journal (msgpack) and the network (JSON) alike.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import msgspec


class Side(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"


class TIF(enum.Enum):
    GTC = "GTC"  # the remainder rests on the book
    IOC = "IOC"  # the remainder is canceled
    FOK = "FOK"  # fills completely or not at all, decided before any fill
    POST = "POST"  # post-only: canceled if it would take liquidity


class Liquidity(enum.Enum):
    ADDED = "A"  # the resting (maker) side of a trade
    REMOVED = "R"  # the incoming (taker) side of a trade


class Reason(enum.Enum):
    """The one list of results that are not a plain success: why a request was refused
    (REJ, or ERR on the admin channel) and why an accepted order left the book (CANCELED).
    Values are stable wire codes; docs/PROTOCOL.md lists them all (a test checks)."""

    # refusals of an order, a cancel or a replace, before it takes effect
    UNKNOWN_SYMBOL = "unknown_symbol"
    BAD_PRICE = "bad_price"  # not a positive decimal number
    BAD_TICK = "bad_tick"  # a price off the instrument's tick
    BAD_QTY = "bad_qty"  # not a positive decimal number
    BAD_LOT = "bad_lot"  # a quantity off the instrument's lot
    QTY_RANGE = "qty_range"  # outside the instrument's min/max quantity
    PRICE_BAND = "price_band"  # outside the instrument's price band
    BAD_TIF = "bad_tif"  # e.g. a post-only or GTC market order
    UNKNOWN_ORDER = "unknown_order"  # not on the book (never existed, filled or canceled)
    NOT_OWNER = "not_owner"  # the order belongs to someone else
    DUPLICATE_ID = "duplicate_id"  # the client order id is already used by an open order
    BAD_ID = "bad_id"  # a client order id must be 1-32 of A-Z a-z 0-9 . _ : -
    SHUTTING_DOWN = "shutting_down"
    UNAVAILABLE = "unavailable"  # a cluster: the account's risk shard is not answering
    INSUFFICIENT_FUNDS = "insufficient_funds"  # the owner cannot pay for it (see exchange/risk.py)
    TOO_MANY_ORDERS = "too_many_orders"  # the owner has as many open orders as one account may (exchange/risk.py)
    NOT_LOGGED_IN = "not_logged_in"  # orders need an account: LOGIN first
    BAD_LOGIN = "bad_login"  # a wrong name or password
    UNKNOWN_TRADE = "unknown_trade"  # TRADES before=<id> names no trade of the symbol
    # refusals of a transfer (the admin channel, `tickline cluster deposit`)
    BAD_REQUEST = "bad_request"  # not a transfer line at all
    UNKNOWN_ASSET = "unknown_asset"
    BAD_AMOUNT = "bad_amount"  # not an exact positive amount of the asset's unit
    BAD_REF = "bad_ref"  # a ref must be 1-64 of A-Z a-z 0-9 . _ : -
    UNKNOWN_ACCOUNT = "unknown_account"
    DUPLICATE_REF = "duplicate_ref"  # applied before: answered OK with the seq it was applied as
    REF_REUSED = "ref_reused"  # the ref was applied to a different transfer: refused
    # why an accepted order (or its remainder) left the book
    USER = "user"  # canceled by its owner
    EXPIRED = "expired"  # the unfilled remainder of an IOC
    FOK_UNFILLED = "fok_unfilled"  # a FOK that could not fill completely
    NO_LIQUIDITY = "no_liquidity"  # the unfilled remainder of a market order
    SELF_TRADE = "self_trade"  # self-trade prevention canceled the resting order
    WOULD_CROSS = "would_cross"  # a post-only order that would have taken liquidity
    DISCONNECT = "disconnect"  # entered on a cancel_on_disconnect connection, which closed
    OCO = "oco"  # the other order of its one-cancels-the-other pair traded or was canceled
    # stops
    WOULD_TRIGGER = "would_trigger"  # a stop whose trigger the last trade has already reached
    BAD_SHOW = "bad_show"  # an iceberg's SHOW= must be a positive quantity on the lot, of a limit order
    BAD_OCO = "bad_oco"  # oco= must name an open order of yours in the same symbol, not in a pair yet
    STOP_PENDING = "stop_pending"  # a pending stop cannot be replaced (cancel it, place another)


class Problem(NamedTuple):
    """A rule a command breaks: the code and a sentence for the client (and, for a
    duplicate transfer, the seq it was applied as)."""

    reason: Reason
    text: str
    seq: int = 0


# ---------------------------------------------------------------- commands


# gc=False on every Struct here: their fields are numbers, strings, None and enum members,
# so none can be part of a reference cycle, and the collector need not look at them. With
# it on, the enum members made each one tracked: at 100,000 orders/s the open orders and
# recent trades filled the young generation and a collection paused the loop ~100 ms.
# Commands are journaled as msgpack maps without their defaults (omit_defaults): a field
# added later with a default reads old journals unchanged.


class NewOrder(msgspec.Struct, frozen=True, gc=False, tag="new", omit_defaults=True):
    symbol: str
    side: Side
    qty: int  # lots
    price: int | None  # ticks; None is a market order
    tif: TIF
    owner: str  # the account
    client_id: str | None = None
    # A market BUY's spending limit in lots x ticks: what the visible book would cost when
    # it was sequenced, which is what its owner's funds were locked for. It never spends more.
    budget: int | None = None
    # A stop: held off the book until a trade prints at or beyond this price (ticks; BUY:
    # at or above, SELL: at or below), then a limit order (with a price) or a market order.
    stop: int | None = None
    # Entered on a cancel_on_disconnect connection: canceled when it closes (and by the
    # restart after a crash, when every connection is gone).
    cod: bool = False
    # An iceberg: the book (and market data) shows this much of it at a time (lots).
    show: int | None = None
    # One-cancels-the-other: the owner's open order (same symbol) this one is paired with.
    oco: int | None = None


class Cancel(msgspec.Struct, frozen=True, gc=False, tag="cancel", omit_defaults=True):
    symbol: str
    order_id: int
    owner: str


class Replace(msgspec.Struct, frozen=True, gc=False, tag="replace", omit_defaults=True):
    """Change an open order's remaining quantity and/or price.

    qty is the new open (leaves) quantity. Decreasing it at the same price keeps time
    priority; a price change or an increase sends the order to the back of its level.
    A `shrink` (a decrease at the same price, which locks no funds) never raises the
    open quantity: if fills in flight left less than qty, the order keeps what is left.
    """

    symbol: str
    order_id: int
    qty: int
    price: int | None  # None keeps the current price
    owner: str
    shrink: bool = False


class MassCancel(msgspec.Struct, frozen=True, gc=False, tag="mass_cancel", omit_defaults=True):
    """Cancel the owner's open orders in a symbol (pending stops too), oldest first: all of
    them (CANCEL ALL), or only those listed (a closed cancel_on_disconnect connection's)."""

    symbol: str
    owner: str
    order_ids: list[int] | None = None
    reason: Reason = Reason.USER


class Transfer(msgspec.Struct, frozen=True, gc=False, tag="transfer", omit_defaults=True):
    """A deposit (amount > 0) or withdrawal (amount < 0) of an asset, in its smallest units.

    The ref is the operator's id for it: a ref already journaled is never applied twice.
    """

    account: str
    asset: str
    amount: int
    ref: str


OrderCommand = NewOrder | Cancel | Replace | MassCancel
Command = NewOrder | Cancel | Replace | MassCancel | Transfer


# ---------------------------------------------------------------- events
# Events are never journaled (replay makes them again); they go to the trade log writer
# as msgpack arrays (array_like), not maps: a third of the bytes and of the encoding time.


class Accepted(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="accepted"):
    order_id: int
    symbol: str
    side: Side
    qty: int
    price: int | None
    tif: TIF
    owner: str
    client_id: str | None = None
    stop: int | None = None  # a stop: pending until triggered
    show: int | None = None  # an iceberg: the slice shown


class Triggered(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="triggered"):
    """A stop fired: from now on a limit order (price) or a market order (None), entering
    the book with the priority of this moment. Sent to its owner; not market data."""

    order_id: int
    symbol: str
    side: Side
    qty: int
    price: int | None
    stop: int
    owner: str
    client_id: str | None = None
    seq: int = 0  # the journal sequence of the command whose trade fired it


class Rejected(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="rejected"):
    reason: Reason
    text: str
    owner: str
    client_id: str | None = None
    order_id: int | None = None  # the order concerned (for a new order: the id it would have had)
    seq: int = 0  # the journal sequence of the command refused


class Fill(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="fill"):
    """One side of a trade, sent to that side's owner."""

    order_id: int
    symbol: str
    side: Side
    qty: int
    price: int
    leaves: int
    trade_id: str
    liquidity: Liquidity
    owner: str
    client_id: str | None = None
    seq: int = 0  # the journal sequence of the command that traded


class Trade(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="trade"):
    """The public record of a trade (one per match, both sides in it)."""

    md_seq: int  # the symbol's market-data sequence number
    trade_id: str
    seq: int  # the journal sequence of the command that caused it
    symbol: str
    qty: int
    price: int
    aggressor: Side
    maker_order_id: int
    taker_order_id: int
    maker_owner: str
    taker_owner: str


class Canceled(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="canceled"):
    order_id: int
    symbol: str
    side: Side
    leaves: int  # the quantity that was canceled
    reason: Reason
    owner: str
    client_id: str | None = None
    seq: int = 0  # the journal sequence of the command that canceled it


class Replaced(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="replaced"):
    order_id: int
    symbol: str
    side: Side
    qty: int  # new open quantity
    price: int
    priority_kept: bool
    owner: str
    client_id: str | None = None
    seq: int = 0  # the journal sequence of the replace


class BookLevelChanged(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="level"):
    """A price level's total open quantity after a command (0: the level is gone)."""

    md_seq: int
    symbol: str
    side: Side
    price: int
    qty: int


class Quote(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="quote"):
    """The best bid and offer after a command that changed them (None: that side is empty)."""

    md_seq: int
    symbol: str
    bid: int | None
    bid_qty: int
    ask: int | None
    ask_qty: int


# Trades, level changes and quotes are the public market data. Each book numbers them in
# one gap-free sequence per symbol (md_seq), in the order the matching core produces them:
# trades as they match, then each changed level, then the quote if the top changed. The
# numbering is part of the book's state, so replay reproduces it.
Event = Accepted | Rejected | Fill | Trade | Canceled | Replaced | BookLevelChanged | Quote | Triggered
MarketData = Trade | BookLevelChanged | Quote
MARKET_DATA = (Trade, BookLevelChanged, Quote)  # (for isinstance)
# For `type(e) in`: a set, not isinstance with the tuple, which walks every class's MRO for
# each of the other events (most of them; 0.2 us each on a path taken per event).
MARKET_DATA_TYPES = frozenset(MARKET_DATA)
# Execution reports: what an order's owner is told (and REPORTS reads back from the trade log).
Report = Fill | Canceled | Replaced | Rejected | Triggered
REPORT_TYPES = frozenset((Fill, Canceled, Replaced, Rejected, Triggered))


class Refusal(msgspec.Struct, frozen=True, gc=False):
    """A request the gateway refused before journaling: its row in the audit.

    Fields are the client's text, clipped: a refused request may not parse at all.
    """

    owner: str
    symbol: str
    side: str  # BUY | SELL; "" for a cancel or replace
    qty: str
    price: str | None  # None: a market order (or a replace keeping its price)
    tif: str | None
    client_id: str | None
    reason: str  # a Reason code
    text: str
    kind: str = "new"  # new | cancel | replace
    target: int | None = None  # the order a cancel or replace named
