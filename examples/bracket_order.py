"""A bracket order on tickline's Python client: an entry, then a take-profit and a stop-loss
that cancel each other (OCO).

    python examples/bracket_order.py --account alice --password alice --symbol BTC-USD \\
        --qty 0.5 --entry 60000 --take-profit 63000 --stop-loss 58000 --duration 60

It buys --qty at --entry (a limit order, IOC: it fills what the book offers now). For what
it bought it places a SELL limit at --take-profit and a SELL stop at --stop-loss paired with
it (oco=): whichever trades first cancels the other, and the pair locks the quantity once.
It prints every report until the bracket is closed or --duration passes (then it cancels
what is left: CANCEL ALL in the symbol).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from client import OrderRejected, connect  # noqa: E402
from protocol import replies as R  # noqa: E402


async def bracket(args: argparse.Namespace) -> int:
    async with connect(args.host, args.port, account=args.account, password=args.password) as ex:
        entry = await ex.buy(args.symbol, args.qty, args.entry, tif="IOC", id="entry")
        bought = Decimal(0)
        async for report in ex.reports():  # the entry's fills, then its end
            if isinstance(report, R.FillReport) and report.order_id == entry.order_id:
                bought += Decimal(report.qty)
                print(f"entry FILL {report.qty} @ {report.price}", flush=True)
                if Decimal(report.leaves) == 0:
                    break
            elif isinstance(report, R.CanceledReport) and report.order_id == entry.order_id:
                break
        if not bought:
            print("the entry bought nothing: no bracket", flush=True)
            return 1
        try:
            tp = await ex.sell(args.symbol, str(bought), args.take_profit, id="tp")
            sl = await ex.sell(args.symbol, str(bought), stop=args.stop_loss, id="sl", oco="tp")
        except OrderRejected as refused:
            print(f"bracket refused: {refused}", flush=True)
            await ex.cancel_all(args.symbol)
            return 1
        print(f"bracket: take-profit {tp.order_id} @ {args.take_profit}, stop-loss {sl.order_id} at {args.stop_loss} (oco={sl.oco})", flush=True)
        legs = {tp.order_id: "take-profit", sl.order_id: "stop-loss"}
        try:
            async with asyncio.timeout(args.duration):
                async for report in ex.reports():
                    if report.order_id not in legs:
                        continue
                    leg = legs[report.order_id]
                    if isinstance(report, R.TriggeredReport):
                        print(f"{leg} TRIGGERED at {report.stop}", flush=True)
                    elif isinstance(report, R.FillReport):
                        print(f"{leg} FILL {report.qty} @ {report.price} leaves={report.leaves}", flush=True)
                    elif isinstance(report, R.CanceledReport):
                        print(f"{leg} CANCELED reason={report.reason}", flush=True)
                        if report.reason == "oco":
                            break  # the other one traded: the bracket is closed
        except TimeoutError:
            print(f"time is up: {await ex.cancel_all(args.symbol)} orders canceled", flush=True)
        print("done", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7001)
    parser.add_argument("--account", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--symbol", default="BTC-USD")
    parser.add_argument("--qty", required=True)
    parser.add_argument("--entry", required=True, help="the entry's limit price (IOC)")
    parser.add_argument("--take-profit", required=True)
    parser.add_argument("--stop-loss", required=True)
    parser.add_argument("--duration", type=float, default=60.0)
    return asyncio.run(bracket(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
