"""Command line: ``python -m smtpproto serve | send | demo | probe``.

Only the argument parsing lives here; the commands are in
:mod:`smtpproto.cli`.  Exit status: 0 success, 1 permanent failure, 75
temporary failure (``send``), 2 usage error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from . import __version__
from .cli import EXIT_USAGE, UsageError
from .cli.backends import BACKENDS
from .cli.probe import add_parser as _add_probe
from .flows import TLSMode

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run an SMTP or LMTP server that stores, prints or discards what it receives",
        description="Run an SMTP (or LMTP) server until SIGTERM or SIGINT. It prints "
        "'listening on HOST:PORT' when ready.",
    )
    where = serve.add_argument_group("listening")
    where.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    where.add_argument("--port", type=int, default=8025, help="TCP port, 0 for any free one (default 8025)")
    where.add_argument("--unix", metavar="PATH", help="listen on this Unix-domain socket instead")
    where.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                       help="N processes sharing the port (SO_REUSEPORT)")
    where.add_argument("--backend", choices=BACKENDS, default="asyncio",
                       help="the adapter to run on (default asyncio; uvloop is asyncio on uvloop's loop)")
    where.add_argument("--max-connections", type=_positive_int, default=100, metavar="N",
                       help="sessions at once per process; more get 421 (default 100)")
    store = serve.add_argument_group("what to do with each message (choose one)")
    sinks = store.add_mutually_exclusive_group(required=True)
    sinks.add_argument("--maildir", metavar="DIR", help="one file per message in this Maildir")
    sinks.add_argument("--mbox", metavar="FILE", help="append to this mbox file (mboxrd)")
    sinks.add_argument("--print", action="store_true", help="write each message to standard output (mboxrd)")
    sinks.add_argument("--discard", action="store_true", help="accept and drop every message")
    smtp = serve.add_argument_group("protocol")
    smtp.add_argument("--hostname", help="name in the greeting and Received: (default: this host's name)")
    smtp.add_argument("--max-message-size", type=int, metavar="N", help="largest message in octets")
    smtp.add_argument("--lmtp", action="store_true", help="speak LMTP (RFC 2033)")
    tls = serve.add_argument_group("TLS and AUTH")
    tls.add_argument("--tls-cert", metavar="FILE", help="certificate chain (PEM); STARTTLS is offered")
    tls.add_argument("--tls-key", metavar="FILE", help="private key (PEM), unless in --tls-cert")
    tls.add_argument("--implicit-tls", action="store_true", help="TLS from the first byte (port 465 style)")
    tls.add_argument("--require-tls", action="store_true", help="refuse mail before STARTTLS (530)")
    tls.add_argument("--auth-file", metavar="FILE", help="user:password lines; AUTH is offered under TLS")
    tls.add_argument("--require-auth", action="store_true", help="refuse MAIL before AUTH (530)")
    serve.add_argument("--verbose", "-v", action="store_true", help="log each session to standard error")


def _add_send(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = commands.add_parser(
        "send",
        help="send one message to one server",
        description="Send a message (from FILE or standard input, LF or CRLF line ends). Exit "
        "status: 0 every recipient accepted it, 1 permanent failure, 75 temporary failure, "
        "2 usage error.",
    )
    send.add_argument("file", nargs="?", metavar="FILE", help="the message (default: standard input)")
    send.add_argument("--host", default="localhost", help="server to connect to (default localhost)")
    send.add_argument("--port", type=int, help="port (default 25; 465 with --tls; 24 with --lmtp)")
    send.add_argument("--unix", metavar="PATH", help="connect to this Unix-domain socket instead")
    send.add_argument("--from", dest="sender", required=True, metavar="ADDR", help="envelope sender ('' for <>)")
    send.add_argument("--to", dest="recipients", action="append", required=True, metavar="ADDR",
                      help="envelope recipient (repeat for several)")
    send.add_argument("--helo", metavar="NAME", help="name to give in EHLO (default: this host's name)")
    mode = send.add_mutually_exclusive_group()
    mode.add_argument("--starttls", dest="tls", action="store_const", const=TLSMode.REQUIRED,
                      help="require STARTTLS")
    mode.add_argument("--tls", dest="tls", action="store_const", const=TLSMode.IMPLICIT,
                      help="implicit TLS from the first byte")
    mode.add_argument("--no-tls", dest="tls", action="store_const", const=TLSMode.NEVER,
                      help="never use TLS")
    send.set_defaults(tls=TLSMode.OPPORTUNISTIC)
    send.add_argument("--cafile", metavar="FILE", help="trust these CA certificates instead of the system's")
    send.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    send.add_argument("--user", metavar="U", help="AUTH as this user (needs TLS)")
    send.add_argument("--password", metavar="P", help="password (or set SMTPPROTO_PASSWORD)")
    send.add_argument("--lmtp", action="store_true", help="speak LMTP (RFC 2033)")
    send.add_argument("--timeout", type=float, metavar="S", help="seconds to wait for each step")
    send.add_argument("--verbose", "-v", action="store_true", help="print the SMTP transcript")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m smtpproto``."""
    parser = argparse.ArgumentParser(prog="python -m smtpproto", description="smtpproto: SMTP tools.")
    parser.add_argument("--version", action="version", version=f"smtpproto {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(commands)
    _add_send(commands)
    commands.add_parser(
        "demo",
        help="send a message through a server on this machine and print the transcript",
        description="Start a server on a free loopback port with a temporary Maildir, send it a "
        "message, print the SMTP transcript and the stored file.",
    )
    _add_probe(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m smtpproto``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            from .cli.serve import ServeSettings, run_serve

            logging.basicConfig(format="%(message)s", level=logging.DEBUG if args.verbose else logging.WARNING)
            options = {k: v for k, v in vars(args).items() if k not in ("command", "verbose")}
            return run_serve(ServeSettings(**options))
        if args.command == "send":
            from .cli.send import SendSettings, run_send

            options = {k: v for k, v in vars(args).items() if k != "command"}
            options["recipients"] = tuple(options["recipients"])
            return run_send(SendSettings(**options))
        if args.command == "demo":
            from .cli.demo import run_demo

            return run_demo()
        if args.command == "probe":
            from .cli.probe import run_probe_command

            return run_probe_command(args)
    except UsageError as exc:
        parser.exit(EXIT_USAGE, f"{parser.prog} {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    parser.print_help(sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
