"""The command line: `tickline serve` and friends. Flags default from TICKLINE_* env vars."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tickline import __version__


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="tickline", description="An exchange you can trade on over TCP.")
    parser.add_argument("--version", action="version", version=f"tickline {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the exchange")
    serve.add_argument("--host", default=env("TICKLINE_HOST", "127.0.0.1"), help="order-entry address (TICKLINE_HOST)")
    serve.add_argument("--port", type=int, default=int(env("TICKLINE_PORT", "7001")), help="order-entry port, 0 for any (TICKLINE_PORT)")
    serve.add_argument("--data-dir", type=Path, default=Path(env("TICKLINE_DATA", "var")), help="journal and logs (TICKLINE_DATA)")
    serve.add_argument("--instruments", type=Path, default=env("TICKLINE_INSTRUMENTS"), help="instruments TOML file (TICKLINE_INSTRUMENTS); default: built-in set")
    serve.add_argument("--log-level", default=env("TICKLINE_LOG_LEVEL", "info"))

    args = parser.parse_args(argv)
    if args.command == "serve":
        import uvloop

        from tickline.app import Config, serve as run_server
        from tickline.logs import configure

        configure(args.log_level)
        config = Config(args.host, args.port, args.data_dir, args.instruments)
        return uvloop.run(run_server(config))
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
