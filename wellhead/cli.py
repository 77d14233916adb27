"""`wellhead serve | check | tools`. Flags map one-to-one onto config keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")
# FastMCP's own Rich handlers would bypass the JSON logs; its records reach ours instead.
os.environ.setdefault("FASTMCP_LOG_ENABLED", "false")

from wellhead.config import Settings, load_settings, mask_secrets, secret_values  # noqa: E402
from wellhead.errors import ConfigError  # noqa: E402

log = logging.getLogger("wellhead.cli")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="wellhead", description="Safe, metered, observable MCP access to your data."
    )
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the MCP server (demo data without --config)")
    serve.add_argument("--config", help="YAML config file (default: the built-in demo dataset)")
    serve.add_argument("--transport", choices=["stdio", "http", "sse"], help="server.transport")
    serve.add_argument("--host", help="server.host (HTTP/SSE)")
    serve.add_argument("--port", type=int, help="server.port (HTTP/SSE)")
    serve.add_argument(
        "--stateless", action="store_true", default=None, help="server.stateless (HTTP)"
    )
    serve.add_argument(
        "--workers", type=int, help="server.workers: HTTP worker processes (stateless HTTP)"
    )
    serve.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE[:ATTR]", help="plugins (repeat)"
    )
    serve.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    check = commands.add_parser("check", help="validate a config file and exit")
    check.add_argument("--config", required=True)

    tools = commands.add_parser("tools", help="print the tool list and its size in tokens")
    tools.add_argument("--config")
    tools.add_argument("--plugin", action="append", default=[])

    audit = commands.add_parser("audit", help="audit trail tools")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", help="check an audit file's hash chain, with its rotated files"
    )
    verify.add_argument("file", nargs="?", help="the audit file (default: audit.path)")
    verify.add_argument("--config", help="config giving audit.path and audit.chain.secret")
    return root


def settings_from(args: argparse.Namespace) -> Settings:
    if getattr(args, "config", None):
        settings = load_settings(args.config)
    else:
        from wellhead.app import demo_settings

        settings = demo_settings()
    overrides: dict[str, Any] = {}
    for flag in ("transport", "host", "port", "stateless", "workers"):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[flag] = value
    server = settings.server.model_copy(update=overrides) if overrides else settings.server
    update: dict[str, Any] = {"server": server}
    if getattr(args, "plugin", None):
        update["plugins"] = [*settings.plugins, *args.plugin]
    if getattr(args, "log_level", None):
        update["logging"] = settings.logging.model_copy(update={"level": args.log_level})
    return settings.model_copy(update=update)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    from wellhead.observe.logs import configure_logging

    configure_logging(getattr(args, "log_level", None) or "INFO")
    settings: Settings | None = None
    try:
        if args.command == "check":
            return check(args)
        if args.command == "audit":
            from wellhead.observe.audit.command import run

            return run(args)
        settings = settings_from(args)
        configure_logging(
            settings.logging.level, third_party_debug=settings.logging.third_party_debug
        )
        if args.command == "tools":
            return asyncio.run(print_tools(settings))
        return serve(settings, argv)
    except ConfigError as exc:
        # A check's or a build's message may quote a DSN or a token: never print a secret.
        secrets = secret_values(settings) if settings is not None else set()
        print(f"wellhead: {mask_secrets(str(exc), secrets)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def check(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    from wellhead.app import build_server

    try:
        build_server(settings)  # builds sources, tools and plugins without connecting
    except ConfigError as exc:
        raise ConfigError(mask_secrets(str(exc), secret_values(settings))) from None
    names = ", ".join(f"{n} ({c.kind})" for n, c in settings.sources.items())
    print(f"{args.config}: ok — sources: {names}")
    return 0


async def print_tools(settings: Settings) -> int:
    from fastmcp import Client

    from wellhead.app import build_server

    async with Client(build_server(settings)) as client:
        tools = await client.list_tools()
    listing = [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools]
    text = json.dumps(listing, separators=(",", ":"))
    for tool in tools:
        print(tool.name)
    print(f"{len(tools)} tools, {len(text)} bytes, about {len(text) // 4} tokens")
    return 0


def serve(settings: Settings, argv: list[str] | None = None) -> int:
    """`argv` is this command line: with `server.workers` > 1 each worker runs it again."""
    from wellhead import serve as http

    transport = settings.server.transport
    http.check_workers(settings)
    inherited = http.inherited_socket()  # set when this process is one of several workers
    if settings.server.workers > 1 and inherited is None:
        return http.supervise(settings, argv if argv is not None else sys.argv[1:])

    from wellhead.app import build_runtime, build_server, http_app

    if transport == "stdio" and sys.stdin.isatty():
        print(
            "wellhead speaks MCP over stdio: an MCP client (Claude Desktop, Cursor, the MCP "
            "Inspector) should launch it. To serve over HTTP instead: wellhead serve "
            "--transport http --port 8000",
            file=sys.stderr,
        )
    runtime = build_runtime(settings)
    mcp = build_server(settings, runtime)
    if transport == "stdio":
        from wellhead.guards.transport import watch_stdio_input

        watch_stdio_input(show_debug=settings.logging.level == "DEBUG")
        # SIGTERM ends the run like Ctrl-C: the lifespan closes sources and flushes the audit.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            asyncio.run(mcp.run_stdio_async(show_banner=False))
        except KeyboardInterrupt:
            log.info("stopped by signal", extra={"transport": "stdio"})
        return 0

    server = settings.server
    app = http_app(mcp, settings)
    if not settings.logging.access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    config = http.uvicorn_config(app, settings)
    path = server.path if transport == "http" else "/sse"
    if inherited is None:
        log.info(
            "serving MCP over %s on http://%s:%s%s",
            transport,
            server.host,
            server.port,
            path,
            extra={"transport": transport, "stateless": server.stateless},
        )
    else:
        log.info("worker serving", extra={"worker_pid": os.getpid()})
    http.DrainingServer(config, runtime).run(sockets=[inherited] if inherited else None)
    _exit_past_abandoned_threads()
    return 0


def _exit_past_abandoned_threads() -> None:
    """Sources are closed and the audit flushed; a sync tool thread abandoned at its deadline
    must not hold the process past its grace period."""
    import threading

    main = threading.main_thread()
    if any(t.is_alive() and not t.daemon and t is not main for t in threading.enumerate()):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
