"""`python -m kosmos_cli.view RESULTS [--port N] [--host H] [--open]`, until `kosmos view` is a command of the CLI."""

from __future__ import annotations

import argparse
import sys

from ..errors import KosmosError, UsageError
from .server import DEFAULT_PORT, serve
from .thumbs import DEFAULT_CACHE_MB

FLAGS = {"port": "--port", "host": "--host", "cache_mb": "--cache-mb"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kosmos_cli.view",
        description="Browse a results file of kosmos ground, refer or find in a local page.",
        epilog="Example: python -m kosmos_cli.view results.parquet --open",
    )
    parser.add_argument("results", help="A results file (.jsonl or .parquet) or a folder of Parquet parts.")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"Port to listen on (0: any free one) [default: {DEFAULT_PORT}, or the next free]",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on [default: 127.0.0.1].")
    parser.add_argument("--open", action="store_true", help="Open the page in the default browser.")
    parser.add_argument("--cache-mb", type=int, default=DEFAULT_CACHE_MB, help="Memory for images, in MB.")
    args = parser.parse_args(argv)
    try:
        serve(args.results, args.host, args.port, open_browser=args.open, cache_mb=args.cache_mb)
    except KosmosError as exc:
        message = exc.render(FLAGS.get(exc.param or "", exc.param)) if isinstance(exc, UsageError) else str(exc)
        print(f"kosmos: error: {message}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
