"""``python -m smtpproto probe``: run the hostile-peer probe against a server.

The probe itself is :mod:`smtpproto.testing.probe`; this module parses its
options, prints a table (or JSON with ``--json``) to standard output, and
turns the verdicts into an exit status: 0 when no attack was unsafe, 1
when one was, 2 for usage errors, 75 when the server could not be probed
at all (no connection, no greeting, EHLO refused).

The probe's package, :mod:`smtpproto.testing`, imports Hypothesis; it is
imported only when the command runs, so the rest of the command line
works without it.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from typing import TextIO

from .._errors import ProtocolError
from .errors import EXIT_FAILED, EXIT_OK, EXIT_TEMPFAIL, UsageError
from .send import PASSWORD_VARIABLE

__all__ = ["add_parser", "run_probe_command"]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``probe`` command to the parser of ``python -m smtpproto``."""
    probe = commands.add_parser(
        "probe",
        help="run every attack class against an SMTP server and judge what it does",
        description="Run the hostile-peer probe: every attack of the project's nine attack "
        "classes, each on a connection of its own, and print what the server did and whether "
        "that is safe. Exit status: 0 no attack was unsafe, 1 at least one was, 2 usage error, "
        "75 the server could not be probed. Messages the server accepts are really delivered "
        "to --rcpt: use a test server.",
    )
    where = probe.add_argument_group("the server")
    where.add_argument("--host", default="localhost", help="server to probe (default localhost)")
    where.add_argument("--port", type=int, default=25, help="its port (default 25)")
    where.add_argument("--starttls-ca", metavar="FILE",
                       help="trust these CA certificates for STARTTLS instead of the system's")
    where.add_argument("--tls-name", metavar="NAME",
                       help="name to check the certificate against (default: --host)")
    who = probe.add_argument_group("the probe's identity")
    who.add_argument("--helo", metavar="NAME", help="name to give in EHLO (default: this host's name)")
    who.add_argument("--mail-from", metavar="ADDR", default="",
                     help="envelope sender (default: the null sender <>)")
    who.add_argument("--rcpt", metavar="ADDR", default="postmaster",
                     help="envelope recipient (default: postmaster)")
    who.add_argument("--user", metavar="U", help="log in as this user where an attack needs it")
    who.add_argument("--password", metavar="P", help=f"password (or set {PASSWORD_VARIABLE})")
    run = probe.add_argument_group("the run")
    run.add_argument("--attack", dest="attacks", action="append", metavar="NAME",
                     help="run only this attack (repeat for several; see --list)")
    run.add_argument("--list", action="store_true", help="list the attacks and exit")
    run.add_argument("--timeout", type=float, default=10.0, metavar="S",
                     help="seconds to wait for the server at any step (default 10)")
    run.add_argument("--max-upload", type=int, default=64 * 1024 * 1024, metavar="OCTETS",
                     help="most octets an oversized-message attack sends (default 64 MiB)")
    run.add_argument("--json", action="store_true", help="print the report as JSON")


def _password(user: str | None, password: str | None) -> str | None:
    if password is not None and user is None:
        raise UsageError("--password needs --user")
    if user is not None and password is None:
        password = os.environ.get(PASSWORD_VARIABLE)
        if password is None:
            raise UsageError(f"--user needs --password (or the {PASSWORD_VARIABLE} variable)")
    return password


def _context(cafile: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--starttls-ca {cafile}: {exc}") from None


def run_probe_command(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Run ``probe`` with the parsed *args*; return the exit status.

    Raises :class:`UsageError` for options that cannot work."""
    out = out if out is not None else sys.stdout
    try:
        from ..testing import probe
    except ImportError as exc:  # pragma: no cover - the testing extra is installed for the tests
        raise UsageError(f"the probe needs the 'testing' extra ({exc})") from None
    if args.list:
        for attack in probe.ATTACKS:
            first = attack.description.split("\n", 1)[0]
            print(f"{attack.name:<38} {attack.attack_class}  {first}", file=out)
        return EXIT_OK
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: not a TCP port")
    password = _password(args.user, args.password)
    try:
        report = probe.run_probe(
            args.host, args.port, mail_from=args.mail_from, rcpt=args.rcpt, helo=args.helo,
            tls_context=_context(args.starttls_ca), server_hostname=args.tls_name,
            username=args.user, password=password, timeout=args.timeout,
            max_upload=args.max_upload, attacks=args.attacks,
        )
    except (ProtocolError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    out.write(report.to_json() + "\n" if args.json else report.format_table())
    out.flush()
    if report.unsafe:
        return EXIT_FAILED
    if report.error is not None:
        return EXIT_TEMPFAIL
    return EXIT_OK

