"""Every client adapter against every server adapter, with STARTTLS and AUTH.

Each server runs in a thread of its own (with its own event loop for
asyncio and trio); each client runs in the test's thread.  The handler
checks the credentials, and every delivered message is compared with what
was sent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio

from smtpproto import ServerConfig, sasl
from smtpproto.flows import ClientOptions, Envelope, Handler, SendResult, Session, TLSMode
from smtpproto.sync import SMTPClient, ServerThread

import certs

KINDS = ["sync", "asyncio", "trio"]
USERS = {"bob": "secret"}


class Recorder(Handler):
    """Checks passwords and SCRAM keys; keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[Envelope] = []
        self.identities: list[str | None] = []
        self.lock = threading.Lock()

    def auth(self, session: Session, request: object) -> object:
        if isinstance(request, sasl.CheckPassword):
            return USERS.get(request.authcid) == request.password
        if isinstance(request, sasl.LookupScram):
            password = USERS.get(request.authcid)
            return None if password is None else sasl.ScramCredentials.from_password(password)
        return None

    def message(self, session: Session, envelope: Envelope) -> None:
        with self.lock:
            self.received.append(envelope)
            self.identities.append(session.auth_identity)


@contextmanager
def running(kind: str, handler: Handler, **kwargs: Any) -> Iterator[tuple[str, int]]:
    """Run a *kind* server in a background thread; yield its address."""
    if kind == "sync":
        with ServerThread(handler, **kwargs) as server:
            yield server.address
        return
    ready = threading.Event()
    box: dict[str, Any] = {}
    if kind == "asyncio":
        from smtpproto.asyncio import AsyncSMTPServer

        async def main_asyncio() -> None:
            server = AsyncSMTPServer(handler, **kwargs)
            await server.start()
            box.update(server=server, loop=asyncio.get_running_loop())
            ready.set()
            await server.serve_forever()

        thread = threading.Thread(target=asyncio.run, args=(main_asyncio(),))
    else:
        from smtpproto.trio import TrioSMTPServer

        async def main_trio() -> None:
            server = TrioSMTPServer(handler, **kwargs)
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve)
                box.update(server=server, token=trio.lowlevel.current_trio_token())
                ready.set()

        thread = threading.Thread(target=trio.run, args=(main_trio,))
    thread.start()
    try:
        assert ready.wait(10), f"the {kind} server did not start"
        host, port = box["server"].address[:2]
        yield host, port
    finally:
        if kind == "asyncio":
            asyncio.run_coroutine_threadsafe(box["server"].shutdown(), box["loop"]).result(30)
        elif "token" in box:
            trio.from_thread.run_sync(box["server"].shutdown, trio_token=box["token"])
        thread.join(30)
        assert not thread.is_alive()


MESSAGES = [
    b"Subject: first\r\n\r\nhello\r\n.\r\n..dots\r\n",
    b"Subject: second\r\n\r\n" + b"line of text\r\n" * 5000,
]


def send_all(kind: str, address: tuple[str, int], options: ClientOptions) -> list[SendResult]:
    """Send MESSAGES over one connection with the *kind* client."""
    host, port = address
    context = certs.client_context()
    recipients = ["carol@example.org", "dave@example.org"]
    if kind == "sync":
        with SMTPClient(host, port, options=options, ssl_context=context) as client:
            return [client.send_message(m, "alice@example.org", recipients) for m in MESSAGES]
    if kind == "asyncio":
        from smtpproto.asyncio import AsyncSMTPClient

        async def main_asyncio() -> list[SendResult]:
            async with AsyncSMTPClient(host, port, options=options, ssl_context=context) as client:
                return [await client.send_message(m, "alice@example.org", recipients) for m in MESSAGES]

        return asyncio.run(main_asyncio())
    from smtpproto.trio import TrioSMTPClient

    async def main_trio() -> list[SendResult]:
        async with TrioSMTPClient(host, port, options=options, ssl_context=context) as client:
            return [await client.send_message(m, "alice@example.org", recipients) for m in MESSAGES]

    return trio.run(main_trio)


@pytest.mark.parametrize("server_kind", KINDS)
@pytest.mark.parametrize("client_kind", KINDS)
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_starttls_auth_every_pair(client_kind: str, server_kind: str, mechanism: str) -> None:
    handler = Recorder()
    config = ServerConfig(starttls=True, require_tls=True, auth_mechanisms=("SCRAM-SHA-256", "PLAIN"), require_auth=True)
    options = ClientOptions(
        helo_name="client.example",
        tls=TLSMode.REQUIRED,
        server_hostname="localhost",
        username="bob",
        password="secret",
        mechanism=mechanism,
    )
    with running(server_kind, handler, config=config, ssl_context=certs.server_context()) as address:
        results = send_all(client_kind, address, options)
    assert [r.accepted for r in results] == [("carol@example.org", "dave@example.org")] * 2
    assert [e.content for e in handler.received] == MESSAGES
    assert handler.identities == ["bob", "bob"]


@pytest.mark.parametrize("server_kind", KINDS)
@pytest.mark.parametrize("client_kind", KINDS)
def test_implicit_tls_and_chunking_every_pair(client_kind: str, server_kind: str) -> None:
    handler = Recorder()
    options = ClientOptions(
        helo_name="client.example", tls=TLSMode.IMPLICIT, server_hostname="localhost", chunking=True
    )
    with running(server_kind, handler, ssl_context=certs.server_context(), implicit_tls=True) as address:
        results = send_all(client_kind, address, options)
    assert all(r.accepted == ("carol@example.org", "dave@example.org") for r in results)
    assert [e.content for e in handler.received] == MESSAGES
    assert all(e.mail.parameters.get("SIZE") for e in handler.received)
