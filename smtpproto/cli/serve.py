"""``python -m smtpproto serve``: a small SMTP or LMTP server that keeps
what it receives in a Maildir or an mbox, prints it, or throws it away.

The command checks its options first (those that cannot work together
exit with status 2 and a message), opens the listening socket itself and
prints ``listening on HOST:PORT`` (the real port with ``--port 0``, or the
Unix socket's path) once connections are accepted.  SIGTERM or SIGINT
stops it: open sessions get 421, accepted messages are already stored, and
the exit status is 0.

With ``--workers N`` the parent binds N sockets to the same port with
``SO_REUSEPORT`` (the kernel spreads connections among them), forks one
worker per socket, and forwards the stop signal to them.

The host name in the greeting and in ``Received:`` is ``--hostname`` or
the name the operating system gives (:func:`socket.gethostname`), never
one found in the DNS.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import signal
import socket
import ssl
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from .._server_config import ServerConfig
from .backends import BACKENDS, ServerSpec, backend_available, run_server
from .errors import EXIT_FAILED, EXIT_OK, UsageError
from .handler import AUTH_MECHANISMS, DeliveryHandler, PasswordFile, PasswordFileError
from .received import local_hostname
from .sinks import DiscardSink, Lock, MaildirSink, MboxSink, PrintSink, Sink

__all__ = ["ServeSettings", "run_serve"]

log = logging.getLogger("smtpproto.cli")


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """What ``serve`` was asked to do, checked by :meth:`check`."""

    host: str = "127.0.0.1"
    port: int = 8025
    unix: str | None = None
    maildir: str | None = None
    mbox: str | None = None
    print: bool = False
    discard: bool = False
    max_message_size: int | None = None
    max_connections: int = 100
    tls_cert: str | None = None
    tls_key: str | None = None
    implicit_tls: bool = False
    require_tls: bool = False
    auth_file: str | None = None
    require_auth: bool = False
    lmtp: bool = False
    hostname: str | None = None
    backend: str = "asyncio"
    workers: int = 1

    def check(self) -> None:
        """Raise :class:`UsageError` for options that cannot work together."""
        sinks = [self.maildir is not None, self.mbox is not None, self.print, self.discard]
        if sum(sinks) != 1:
            raise UsageError("choose one of --maildir, --mbox, --print and --discard")
        if self.tls_key is not None and self.tls_cert is None:
            raise UsageError("--tls-key needs --tls-cert")
        if self.tls_cert is None:
            for option, given in (
                ("--implicit-tls", self.implicit_tls),
                ("--require-tls", self.require_tls),
                ("--auth-file", self.auth_file is not None),
                ("--require-auth", self.require_auth),
            ):
                if given:
                    why = " (AUTH is only offered under TLS)" if "auth" in option else ""
                    raise UsageError(f"{option} needs a certificate: --tls-cert and --tls-key{why}")
        if self.require_auth and self.auth_file is None:
            raise UsageError("--require-auth needs --auth-file (nobody could log in)")
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}")
        missing = backend_available(self.backend)
        if missing is not None:
            raise UsageError(missing)
        if self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if self.workers > 1 and self.unix is not None:
            raise UsageError("--workers shares a TCP port; it cannot be used with --unix")
        if self.unix is None and not 0 <= self.port < 65536:
            raise UsageError(f"--port {self.port}: not a TCP port")
        if self.max_connections < 1:
            raise UsageError("--max-connections must be at least 1")

    def server_config(self) -> ServerConfig:
        """The protocol core's configuration."""
        extra: dict[str, Any] = {}
        if self.max_message_size is not None:
            extra["max_message_size"] = self.max_message_size
        try:
            return ServerConfig(
                hostname=self.hostname or local_hostname(),
                starttls=self.tls_cert is not None and not self.implicit_tls,
                require_tls=self.require_tls,
                auth_mechanisms=AUTH_MECHANISMS if self.auth_file is not None else (),
                require_auth=self.require_auth,
                lmtp=self.lmtp,
                **extra,
            )
        except ValueError as exc:
            option = {
                "hostname": "--hostname",
                "max_message_size": "--max-message-size",
            }
            text = str(exc)
            for field, name in option.items():
                text = text.replace(f"ServerConfig.{field}", name)
            raise UsageError(text) from None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context, or None without a certificate."""
        if self.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load --tls-cert {self.tls_cert}: {exc}") from None
        return context

    def sink(self, lock: Lock | None) -> Sink:
        """Where accepted messages go."""
        if self.maildir is not None:
            return MaildirSink(self.maildir)
        if self.mbox is not None:
            return MboxSink(self.mbox, lock)
        if self.print:
            return PrintSink(sys.stdout.buffer, lock)
        return DiscardSink()

    def listen(self) -> list[socket.socket]:
        """The listening sockets: one per worker, sharing the port."""
        if self.unix is not None:
            return [_unix_listener(self.unix)]
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        share = self.workers > 1
        first = socket.create_server((self.host, self.port), family=family, backlog=128, reuse_port=share)
        port = first.getsockname()[1]
        sockets = [first]
        try:
            for _ in range(self.workers - 1):
                sockets.append(
                    socket.create_server((self.host, port), family=family, backlog=128, reuse_port=True)
                )
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return sockets


def _unix_listener(path: str) -> socket.socket:
    # A socket file left by a server that died is replaced; any other file is not.
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except ConnectionRefusedError:
                os.unlink(path)
            else:
                raise OSError(f"{path}: a server is already listening there")
            finally:
                probe.close()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def _describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    if isinstance(name, str):
        return name
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_serve(settings: ServeSettings, *, out: TextIO | None = None) -> int:
    """Run the server as *settings* say until SIGTERM or SIGINT; return the
    exit status.  Raises :class:`UsageError` for options that cannot work."""
    out = out if out is not None else sys.stdout
    settings.check()
    config = settings.server_config()
    context = settings.ssl_context()
    try:
        passwords = PasswordFile(settings.auth_file) if settings.auth_file is not None else None
    except PasswordFileError as exc:
        raise UsageError(f"--auth-file: {exc}") from None
    lock: Lock | None = multiprocessing.get_context("fork").Lock() if settings.workers > 1 else None
    try:
        sink = settings.sink(lock)
    except OSError as exc:
        print(f"serve: cannot open the mailbox: {exc}", file=sys.stderr)
        return EXIT_FAILED
    handler = DeliveryHandler(sink, hostname=config.hostname, lmtp=settings.lmtp, passwords=passwords)
    spec = ServerSpec(
        handler=handler, config=config, ssl_context=context,
        implicit_tls=settings.implicit_tls, max_connections=settings.max_connections,
    )
    try:
        sockets = settings.listen()
    except OSError as exc:
        where = settings.unix or f"{settings.host}:{settings.port}"
        print(f"serve: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    where = _describe(sockets[0])

    def announce() -> None:
        print(f"listening on {where}", file=out, flush=True)

    try:
        if len(sockets) == 1:
            run_server(settings.backend, spec, sockets[0], announce)
            return EXIT_OK
        return _run_workers(settings.backend, spec, sockets, announce)
    finally:
        for sock in sockets:
            sock.close()
        if settings.unix is not None:
            try:
                os.unlink(settings.unix)
            except OSError:
                pass


# -- workers -------------------------------------------------------------------


def _worker(backend: str, spec: ServerSpec, sockets: list[socket.socket], index: int, ready_fd: int) -> None:
    """One worker process: serve on ``sockets[index]``, close the others."""
    mine = sockets[index]
    for other in sockets:
        if other is not mine:
            other.close()

    def ready() -> None:
        os.write(ready_fd, b"r")
        os.close(ready_fd)

    run_server(backend, spec, mine, ready)
    # The adapters put the default handlers back when they stop; a stop
    # signal forwarded by the parent after that must not kill the worker.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_IGN)


def _run_workers(
    backend: str, spec: ServerSpec, sockets: list[socket.socket], announce: Callable[[], None]
) -> int:
    """Fork a worker per socket, announce once all are ready, forward the
    stop signal, and wait for them; 0 when every worker exited with 0."""
    context = multiprocessing.get_context("fork")
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    workers = [
        context.Process(target=_worker, args=(backend, spec, sockets, index, write_fd), name=f"worker-{index}")
        for index in range(len(sockets))
    ]
    for worker in workers:
        worker.start()
    os.close(write_fd)
    stopping = False

    def stop(number: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        ready = 0
        while ready < len(workers) and not stopping:
            readable, _, _ = select.select([read_fd], [], [], 0.2)
            if readable:
                got = os.read(read_fd, len(workers))
                if not got:
                    break  # every worker has gone
                ready += len(got)
            if any(not worker.is_alive() for worker in workers):
                break
        if ready == len(workers) and not stopping:
            announce()
            while not stopping and all(worker.is_alive() for worker in workers):
                time.sleep(0.2)
        if not stopping:
            log.error("serve: a worker stopped unexpectedly; stopping the others")
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.join(spec.grace + 5)
            if worker.is_alive():
                worker.kill()
                worker.join()
        clean = stopping and all(worker.exitcode == 0 for worker in workers)
        return EXIT_OK if clean else EXIT_FAILED
    finally:
        os.close(read_fd)
        for number, handler in previous.items():
            signal.signal(number, handler)
