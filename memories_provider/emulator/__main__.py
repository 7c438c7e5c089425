"""``python -m memories_provider.emulator``: serve the emulator in the foreground."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from memories_provider.emulator.config import DEFAULT_API_KEY, EmulatorConfig
from memories_provider.emulator.control import EmulatorHandle
from memories_provider.emulator.server import build_config, serve_forever


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m memories_provider.emulator", description="A local emulator of the memories.ai API."
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8787, help="port (0 = any free port; default 8787)")
    p.add_argument("--data-dir", help="where uploaded bytes are kept (default: a temp dir removed on exit)")
    p.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help=f"an accepted API key (repeatable; default {DEFAULT_API_KEY})",
    )
    p.add_argument("--parse-delay", type=float, default=0.0, help="seconds until an upload is PARSE")
    p.add_argument("--no-rate-limits", action="store_true", help="switch the spec's rate limits off")
    p.add_argument("--indexing-cap", type=int, help="max videos in UNPARSE at once")
    p.add_argument("--credits", type=float, help="account balance in USD (default unlimited)")
    p.add_argument("--fail-pattern", help="regex on filenames that should end FAILED")
    p.add_argument("--chunked-downloads", action="store_true", help="downloads without Content-Length")
    p.add_argument(
        "--echo-requests",
        action="store_true",
        help="500/401/0401/0429 answers echo the request, Authorization header included (a leak test)",
    )
    p.add_argument(
        "--metadata-before-parse",
        action="store_true",
        help="old, lenient reading: metadata filters match and tags show before PARSE (the service: after)",
    )
    p.add_argument("--log-level", default="WARNING")
    return p


def _config(args: argparse.Namespace) -> EmulatorConfig:
    return build_config(
        api_keys=args.api_keys or [DEFAULT_API_KEY],
        rate_limits=not args.no_rate_limits,
        parse_delay=args.parse_delay,
        indexing_cap=args.indexing_cap,
        credits=args.credits,
        fail_pattern=args.fail_pattern,
        chunked_downloads=args.chunked_downloads,
        echo_requests=args.echo_requests,
        metadata_before_parse=args.metadata_before_parse,
    )


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0-65535, got {args.port}")
    if not isinstance(logging.getLevelName(args.log_level.upper()), int):
        parser.error(
            f"--log-level must be a logging level (DEBUG, INFO, WARNING, ERROR), got {args.log_level!r}"
        )
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = _config(args)
    except ValueError as exc:  # the message starts with the setting's name; show it as its flag
        name, _, rest = str(exc).partition(" ")
        parser.error(f"--{name.rstrip(':').replace('_', '-')}{':' if name.endswith(':') else ''} {rest}")
    temp = args.data_dir is None
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="memories-emulator-"))
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--data-dir: cannot create {data_dir}: {exc.strerror or exc}")

    def announce(port: int) -> None:
        shown = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
        handle = EmulatorHandle(f"http://{shown}:{port}", config.api_keys[0], data_dir)
        print(f"MEMORIES_EMULATOR_URL={handle.url}", flush=True)
        print(f"AIRFLOW_CONN_MEMORIES_DEFAULT='{handle.conn_uri}'", flush=True)

    try:
        serve_forever(args.host, args.port, data_dir, config, announce)
    except OSError as exc:  # the port is taken, the address is not this machine's, ...
        print(
            f"memories emulator: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:  # pragma: no cover - signal handlers normally catch it
        pass
    finally:
        if temp:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
