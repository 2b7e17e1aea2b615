"""The blocking adapter (smtpproto.sync) over loopback TCP and Unix-domain
sockets: SMTPClient, SMTPServer, ServerThread, and smtplib as a peer."""

from __future__ import annotations

import contextlib
import os
import smtplib
import socket
import ssl
import struct
import sys
import tempfile
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from certs import client_context, server_context
from flowpair import AuthRecorder, Recorder
from smtpproto import LocalProtocolError, Reply, ServerConfig
from smtpproto.flows import ClientOptions, Handler, Timeouts, TLSMode, errors
from smtpproto.sync import ServerThread, SMTPClient, SMTPServer, default_helo_name

MESSAGE = b"Subject: test\r\n\r\nHello.\r\n"
QUICK = Timeouts.all(10)


@contextlib.contextmanager
def unix_path() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="smtpproto-") as directory:
        yield os.path.join(directory, "lmtp.sock")


def test_send_and_quit_over_tcp() -> None:
    handler = Recorder()
    with ServerThread(handler) as server:
        host, port = server.address
        assert host == "127.0.0.1" and port > 0
        with SMTPClient(host, port, options=ClientOptions(helo_name="me.example", timeouts=QUICK)) as client:
            result = client.send_message(MESSAGE, "a@example.org", ["b@example.org"])
            assert result.accepted == ("b@example.org",)
            msg = EmailMessage()
            msg["From"] = "a@example.org"
            msg["To"] = "c@example.org"
            msg["Bcc"] = "d@example.org"
            msg.set_content("second\n")
            result = client.send_message(msg)
            assert result.accepted == ("c@example.org", "d@example.org")
    contents = [args[0].content for args in handler.args("message")]
    assert contents[0] == MESSAGE and b"Bcc" not in contents[1]
    assert handler.args("ehlo") == [("me.example",)]
    assert handler.names()[-2:] == ["quit", "disconnect"]


def test_default_client_options() -> None:
    client = SMTPClient("localhost", 2525)
    assert client.options.server_hostname == "localhost"
    assert client.options.helo_name == default_helo_name()
    assert isinstance(client.ssl_context, ssl.SSLContext)
    never = SMTPClient("localhost", options=ClientOptions(tls=TLSMode.NEVER))
    assert never.ssl_context is None and never.port == 25
    # The certificate is checked against the host connected to unless told otherwise.
    assert never.options.server_hostname == "localhost"
    other = SMTPClient("mx.example", options=ClientOptions(server_hostname="name.example"))
    assert other.options.server_hostname == "name.example"


def test_default_helo_name_is_a_plain_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(c.isalnum() or c in "-." for c in default_helo_name())
    monkeypatch.setattr(socket, "gethostname", lambda: "bad name!")
    assert default_helo_name() == "localhost"
    monkeypatch.setattr(socket, "gethostname", lambda: "")
    assert default_helo_name() == "localhost"


def test_methods_need_a_connection() -> None:
    client = SMTPClient("localhost", options=ClientOptions(tls=TLSMode.NEVER))
    with pytest.raises(RuntimeError, match="connect"):
        client.send_message(MESSAGE, "a@example.org", ["b@example.org"])
    client.quit()  # nothing to do


def test_unix_domain_sockets() -> None:
    handler = Recorder()
    with unix_path() as path:
        with ServerThread(handler, unix_path=path) as server:
            assert server.address == path
            options = ClientOptions(tls=TLSMode.NEVER, timeouts=QUICK)
            with SMTPClient(unix_path=path, options=options) as client:
                client.send_message(MESSAGE, "a@example.org", ["b@example.org"])
    assert handler.args("message")[0][0].content == MESSAGE


def test_lmtp_over_a_unix_socket_with_the_client() -> None:
    handler = Recorder(message=lambda s, e: [Reply(code=250, text=("ok",)), Reply(code=550, text=("no",))])
    with unix_path() as path:
        with ServerThread(handler, unix_path=path, config=ServerConfig(lmtp=True)):
            options = ClientOptions(tls=TLSMode.NEVER, lmtp=True, timeouts=QUICK)
            with SMTPClient(unix_path=path, options=options) as client:
                result = client.send_message(MESSAGE, "a@example.org", ["b@example.org", "c@example.org"])
    assert result.accepted == ("b@example.org",)
    assert result.refused["c@example.org"].code == 550


def test_starttls_with_the_test_ca() -> None:
    handler = Recorder()
    with ServerThread(handler, ssl_context=server_context()) as server:
        options = ClientOptions(tls=TLSMode.REQUIRED, timeouts=QUICK)
        with SMTPClient(*server.address, options=options, ssl_context=client_context()) as client:
            client.send_message(MESSAGE, "a@example.org", ["b@example.org"])
            assert client.session.conn.tls
    assert [s["tls"] for s in handler.seen if s["hook"] == "message"] == [True]


def test_implicit_tls() -> None:
    handler = Recorder()
    with ServerThread(handler, ssl_context=server_context(), implicit_tls=True) as server:
        options = ClientOptions(tls=TLSMode.IMPLICIT, timeouts=QUICK)
        with SMTPClient(*server.address, options=options, ssl_context=client_context()) as client:
            client.send_message(MESSAGE, "a@example.org", ["b@example.org"])
    assert all(s["tls"] for s in handler.seen)


def test_implicit_tls_client_against_a_cleartext_server() -> None:
    handler = Recorder()
    with ServerThread(handler) as server:
        options = ClientOptions(tls=TLSMode.IMPLICIT, timeouts=QUICK)
        client = SMTPClient(*server.address, options=options, ssl_context=client_context())
        with pytest.raises(errors.ProtocolFailure) as info:
            client.connect()
        assert info.value.step == "connect"


def test_cleartext_client_against_an_implicit_tls_server() -> None:
    handler = Recorder()
    with ServerThread(handler, ssl_context=server_context(), implicit_tls=True) as server:
        options = ClientOptions(tls=TLSMode.NEVER, timeouts=Timeouts.all(0.3))
        client = SMTPClient(*server.address, options=options)
        with pytest.raises(errors.SMTPError):
            client.connect()
    assert "connect" not in handler.names()  # the handshake failed first


def test_server_tls_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="ssl_context"):
        SMTPServer(implicit_tls=True)
    with pytest.raises(ValueError, match="ssl_context"):
        SMTPServer(config=ServerConfig(starttls=True))


def test_server_on_a_given_listener() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with ServerThread(sock=listener) as server:
        assert server.address == listener.getsockname()
        with socket.create_connection(server.address, timeout=10) as sock:
            assert sock.recv(100).startswith(b"220")


def test_session_failure_does_not_kill_the_server(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Handler):
        def disconnect(self, session: Any) -> None:
            raise SystemError("bug in the handler")

    with ServerThread(Broken()) as server:
        for _ in range(2):
            with SMTPClient(*server.address, options=ClientOptions(tls=TLSMode.NEVER, timeouts=QUICK)) as client:
                client.send_message(MESSAGE, "a@example.org", ["b@example.org"])
    assert "the disconnect hook failed" in caplog.text


def test_refusing_a_client_that_already_left() -> None:
    server = SMTPServer(max_connections=0)
    gone = socket.create_connection(server.address)
    gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    gone.close()  # a reset waits in the accept queue: the 421 cannot be written
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with socket.create_connection(server.address, timeout=10) as sock:
            assert sock.recv(100) == b"421 4.3.2 Too many connections, try again later\r\n"
    finally:
        server.shutdown()
        thread.join(10)


def test_serve_forever_fails_on_a_broken_listener() -> None:
    with socket.socket() as unbound:
        server = SMTPServer(sock=unbound)
        with pytest.raises(OSError):
            server.serve_forever()


def test_serve_forever_after_shutdown_returns_at_once() -> None:
    server = SMTPServer()
    server.shutdown()
    server.serve_forever()
    assert server.listener.fileno() == -1


def test_a_flow_bug_is_logged_and_the_socket_closed(caplog: pytest.LogCaptureFixture) -> None:
    server = SMTPServer()
    server.config = object()  # type: ignore[assignment]  # breaks ServerSession()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with socket.create_connection(server.address, timeout=10) as sock:
            assert sock.recv(100) == b""
    finally:
        server.shutdown()
        thread.join(10)
    assert "failed" in caplog.text


# -- connect errors ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_refused_port_is_disconnected() -> None:
    client = SMTPClient("127.0.0.1", free_port(), options=ClientOptions(timeouts=QUICK))
    with pytest.raises(errors.Disconnected) as info:
        client.connect()
    assert info.value.step == "connect" and info.value.temporary


def test_missing_unix_socket_is_disconnected() -> None:
    with unix_path() as path:
        client = SMTPClient(unix_path=path, options=ClientOptions(tls=TLSMode.NEVER))
        with pytest.raises(errors.Disconnected):
            client.connect()


def test_no_greeting_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        options = ClientOptions(timeouts=Timeouts(greeting=0.2))
        client = SMTPClient(*listener.getsockname(), options=options)
        with pytest.raises(errors.Timeout) as info:
            client.connect()
        assert info.value.step == "greeting"
        with listener.accept()[0] as accepted:
            assert accepted.recv(100) == b""  # the client closed its end


def test_connect_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        waiting: list[socket.socket] = []
        try:
            for _ in range(16):  # fill the accept queue until a SYN goes unanswered
                try:
                    waiting.append(socket.create_connection(address, timeout=0.3))
                except TimeoutError:
                    break
            client = SMTPClient(*address, options=ClientOptions(timeouts=Timeouts(connect=0.3)))
            with pytest.raises(errors.Timeout) as info:
                client.connect()
            assert info.value.step == "connect"
        finally:
            for sock in waiting:
                sock.close()


def test_refused_session_leaves_nothing_open() -> None:
    with ServerThread(Recorder(ehlo=Reply(code=550, text=("no",)))) as server:
        with pytest.raises(errors.HelloRefused):
            with SMTPClient(*server.address, options=ClientOptions(timeouts=QUICK)):
                pass


def test_auth_over_the_adapter() -> None:
    config = ServerConfig(starttls=True, auth_mechanisms=("PLAIN", "LOGIN"))
    with ServerThread(AuthRecorder(), config=config, ssl_context=server_context()) as server:
        options = ClientOptions(username="user", password="secret pass", timeouts=QUICK)
        with SMTPClient(*server.address, options=options, ssl_context=client_context()) as client:
            assert client.session.conn.authenticated
        bad = ClientOptions(username="user", password="wrong", timeouts=QUICK)
        with pytest.raises(errors.AuthFailed):
            SMTPClient(*server.address, options=bad, ssl_context=client_context()).connect()


def test_failure_while_sending_closes_the_socket() -> None:
    with ServerThread(Recorder()) as server:
        client = SMTPClient(*server.address, options=ClientOptions(timeouts=QUICK))
        client.connect()

        def chunks() -> Iterator[bytes]:
            yield b"x\r\n"
            raise OSError("source gone")

        with pytest.raises(OSError, match="source gone"):
            client.send_message(chunks(), "a@example.org", ["b@example.org"])
        client.quit()


def test_server_closing_mid_session() -> None:
    handler = Recorder(mail=Reply(code=421, text=("bye now",)))
    with ServerThread(handler) as server:
        client = SMTPClient(*server.address, options=ClientOptions(timeouts=QUICK))
        client.connect()
        with pytest.raises(errors.SenderRefused):
            client.send_message(MESSAGE, "a@example.org", ["b@example.org"])
        with pytest.raises(errors.Disconnected):
            client.send_message(MESSAGE, "a@example.org", ["b@example.org"])
        client.quit()


# -- smtplib as the client -----------------------------------------------------------


def test_smtplib_plain() -> None:
    handler = Recorder()
    with ServerThread(handler) as server:
        with smtplib.SMTP(server.address[0], server.address[1], timeout=10) as smtp:
            refused = smtp.sendmail("a@example.org", ["b@example.org", "c@example.org"], MESSAGE)
            assert refused == {}
            assert smtp.noop()[0] == 250
    (envelope,) = handler.args("message")[0]
    assert envelope.recipient_addresses == ["b@example.org", "c@example.org"]
    assert envelope.content == MESSAGE


def test_smtplib_starttls() -> None:
    handler = Recorder()
    with ServerThread(handler, ssl_context=server_context()) as server:
        with smtplib.SMTP(server.address[0], server.address[1], timeout=10) as smtp:
            smtp.starttls(context=client_context())
            smtp.ehlo()
            assert not smtp.has_extn("starttls")
            smtp.sendmail("a@example.org", ["b@example.org"], MESSAGE)
    assert [s["tls"] for s in handler.seen if s["hook"] == "message"] == [True]


def test_smtplib_implicit_tls() -> None:
    handler = Recorder()
    with ServerThread(handler, ssl_context=server_context(), implicit_tls=True) as server:
        host, port = server.address
        with smtplib.SMTP_SSL(host, port, timeout=10, context=client_context()) as smtp:
            smtp.sendmail("a@example.org", ["b@example.org"], MESSAGE)
    assert handler.args("message")


def test_smtplib_lmtp_over_a_unix_socket() -> None:
    def message(session: Any, envelope: Any) -> list[Reply]:
        return [Reply(code=250, text=("ok",)), Reply(code=452, text=("mailbox full",), enhanced="4.2.2")]

    handler = Recorder(message=message)
    with unix_path() as path:
        with ServerThread(handler, unix_path=path, config=ServerConfig(lmtp=True)):
            lmtp = smtplib.LMTP(path)
            try:
                # smtplib reads the first reply only; the second is the rest of LMTP's answer.
                assert lmtp.ehlo("client.example")[0] == 250  # smtplib.LMTP says LHLO
                lmtp.mail("a@example.org")
                lmtp.rcpt("b@example.org")
                lmtp.rcpt("c@example.org")
                assert lmtp.data(MESSAGE)[0] == 250
                assert lmtp.getreply() == (452, b"4.2.2 mailbox full")
                lmtp.quit()
            finally:
                lmtp.close()
    assert handler.args("message")[0][0].recipient_addresses == ["b@example.org", "c@example.org"]


def test_smtplib_auth_against_the_server() -> None:
    config = ServerConfig(starttls=True, auth_mechanisms=("PLAIN", "LOGIN", "CRAM-MD5"))
    handler = AuthRecorder()
    with ServerThread(handler, config=config, ssl_context=server_context()) as server:
        with smtplib.SMTP(server.address[0], server.address[1], timeout=10) as smtp:
            smtp.starttls(context=client_context())
            smtp.login("user", "secret pass")
            smtp.sendmail("a@example.org", ["b@example.org"], MESSAGE)
    assert [s["auth_identity"] for s in handler.seen if s["hook"] == "message"] == ["user"]


def waiting_in_join(thread: threading.Thread) -> bool:
    """True while *thread* is inside ``Thread.join``."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code is threading.Thread.join.__code__:
            return True
        frame = frame.f_back
    return False


def test_shutdown_waits_for_a_message_being_accepted() -> None:
    entered = threading.Event()
    release = threading.Event()

    def message(session: Any, envelope: Any) -> None:
        entered.set()
        assert release.wait(10)

    thread = ServerThread(Recorder(message=message))
    with thread:
        with socket.create_connection(thread.address, timeout=10) as sock:
            sock.sendall(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
            sock.sendall(MESSAGE + b".\r\n")
            assert entered.wait(10)
            stopper = threading.Thread(target=thread.server.shutdown)
            stopper.start()
            # Release the hook only once shutdown waits for the session.
            pause = threading.Event()
            for _ in range(1000):
                if waiting_in_join(stopper):
                    break
                pause.wait(0.01)
            assert waiting_in_join(stopper)
            release.set()
            stopper.join(10)
            answers = b""
            while chunk := sock.recv(4096):
                answers += chunk
    assert answers.endswith(
        b"250 2.0.0 Message accepted for delivery\r\n"
        b"421 4.3.2 Service shutting down, closing connection\r\n"
    )


def test_server_thread_runs_and_stops() -> None:
    thread = ServerThread()
    with thread as server:
        assert server is thread
        assert thread._thread.is_alive()
    assert not thread._thread.is_alive()
    assert thread.server.listener.fileno() == -1


def test_session_timeout_caps_a_whole_session() -> None:
    """A client that keeps the session busy with NOOPs still hits the cap."""
    with ServerThread(Recorder(), session_timeout=1.0) as server:
        with socket.create_connection(server.address, timeout=10) as sock:
            threading.Event().wait(0.5)  # idle past a poll of the shutdown flag
            data = b""
            for _ in range(40):
                sock.sendall(b"NOOP\r\n")
                chunk = sock.recv(4096)
                data += chunk
                if not chunk or b"421" in data:
                    break
                threading.Event().wait(0.1)
    assert b"421 4.4.2" in data


def test_session_time_already_spent() -> None:
    with ServerThread(Recorder(), session_timeout=1e-9) as server:
        with socket.create_connection(server.address, timeout=10) as sock:
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
    assert data.startswith(b"220 ") and b"421 4.4.2" in data


def test_unix_socket_file_removed_at_shutdown() -> None:
    with unix_path() as path:
        server = SMTPServer(unix_path=path)
        assert os.path.exists(path)
        server.shutdown()
        assert not os.path.exists(path)
        again = SMTPServer(unix_path=path)  # the path can be bound again
        os.unlink(path)  # somebody else removed it: shutdown still works
        again.shutdown()


def test_implicit_tls_server_refuses_without_cleartext() -> None:
    """Over max_connections an implicit-TLS server just closes: a cleartext
    421 would read as a broken handshake to a TLS client."""
    server = SMTPServer(ssl_context=server_context(), implicit_tls=True, max_connections=0)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with socket.create_connection(server.address, timeout=10) as sock:
            assert sock.recv(100) == b""
    finally:
        server.shutdown()
        thread.join(10)


class FlakyListener:
    """A listening socket whose first accept() fails like a full fd table."""

    def __init__(self, sock: socket.socket, error: OSError) -> None:
        self.sock = sock
        self.errors = [error]

    def accept(self) -> tuple[socket.socket, Any]:
        if self.errors:
            raise self.errors.pop()
        return self.sock.accept()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def test_transient_accept_errors_do_not_stop_the_server(caplog: pytest.LogCaptureFixture) -> None:
    import errno

    listener = FlakyListener(socket.create_server(("127.0.0.1", 0)), OSError(errno.EMFILE, "Too many open files"))
    server = SMTPServer(sock=listener)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        options = ClientOptions(helo_name="c.example", tls=TLSMode.NEVER)
        with SMTPClient(*server.address[:2], options=options) as client:
            assert client.send_message(MESSAGE, "a@example.org", ["b@example.org"]).accepted
    finally:
        server.shutdown()
        thread.join(10)
    assert "accept failed" in caplog.text


class Pending:
    """An awaitable that is not a coroutine (a future, say)."""

    def __await__(self) -> Iterator[None]:
        yield None


@pytest.mark.parametrize("kind", ["coroutine", "awaitable"])
def test_coroutine_hooks_need_an_async_adapter(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    class AsyncHandler(Handler):
        async def mail(self, session: Any, mail: Any) -> Reply | None:
            return None

    class AwaitableHandler(Handler):
        def mail(self, session: Any, mail: Any) -> Any:
            return Pending()

    handler = AsyncHandler() if kind == "coroutine" else AwaitableHandler()

    options = ClientOptions(helo_name="c.example", tls=TLSMode.NEVER)
    with ServerThread(handler) as server, SMTPClient(*server.address, options=options) as client:
        with pytest.raises(errors.SenderRefused) as info:
            client.send_message(MESSAGE, "a@example.org", ["b@example.org"])
    assert info.value.reply.code == 451
    assert "use the asyncio or trio adapter" in caplog.text


# -- many messages over one connection ----------------------------------------------
#
# The client checks an address once per session and reuses what it built for
# the next messages (a bounded number of addresses: past the bound it forgets
# and starts again); each message must still carry its own envelope and MAIL
# parameters, and a bad address must still be refused before anything is sent.


def test_every_message_keeps_its_own_envelope_over_one_connection() -> None:
    handler = Recorder()
    plain = MESSAGE
    eight_bit = "Subject: café\r\n\r\nCafé.\r\n".encode()
    sent: list[tuple[str, list[str], bytes]] = []
    with ServerThread(handler) as server:
        options = ClientOptions(tls=TLSMode.NEVER, timeouts=QUICK)
        with SMTPClient(*server.address, options=options) as client:
            for n in range(300):
                # A sender seen before every other message, a new one between.
                sender = "same@example.org" if n % 2 else f"s{n}@example.org"
                recipients = [f"r{n}a@example.org", f"r{n}b@example.org", "all@example.org"]
                content = eight_bit if n % 3 == 0 else plain + b"x" * n + b"\r\n"
                result = client.send_message(content, sender, recipients)
                assert result.accepted == tuple(recipients)
                sent.append((sender, recipients, content))
            with pytest.raises(LocalProtocolError):
                client.send_message(MESSAGE, "same@example.org", ["bad\r\nRSET@example.org"])
            with pytest.raises(LocalProtocolError):
                client.send_message(MESSAGE, "bad>@example.org", ["all@example.org"])
            client.send_message(MESSAGE, "same@example.org", ["all@example.org"])
    envelopes = [args[0] for args in handler.args("message")]
    assert len(envelopes) == len(sent) + 1
    for envelope, (sender, recipients, content) in zip(envelopes, sent):
        assert envelope.sender == sender
        assert [rcpt.forward_path for rcpt in envelope.recipients] == recipients
        assert envelope.content == content
        assert envelope.mail.parameters.get("SIZE") == str(len(content))
        assert envelope.mail.parameters.get("BODY") == (None if content.isascii() else "8BITMIME")
    last = envelopes[-1]
    assert last.sender == "same@example.org" and last.mail.parameters.get("BODY") is None


# -- the TLS goodbye (RFC 8446 §6.1) -------------------------------------------------
#
# "Each party MUST send a "close_notify" alert before closing its write side
# of the connection."  A peer that refuses ragged EOFs (suppress_ragged_eofs=
# False, as OpenSSL 3's s_client does) reads a clean end (b"") only when the
# alert came; a bare TCP close is ssl.SSLEOFError there.


def read_reply(sock: socket.socket) -> bytes:
    """One whole reply (every line up to the one with a space after the code)."""
    data = b""
    while not (data.endswith(b"\r\n") and data.split(b"\r\n")[-2][3:4] == b" "):
        chunk = sock.recv(4096)
        assert chunk, f"the connection closed after {data!r}"
        data += chunk
    return data


@pytest.mark.parametrize("implicit", [False, True], ids=["STARTTLS", "implicit"])
def test_server_sends_close_notify_after_quit(implicit: bool) -> None:
    with ServerThread(Recorder(), ssl_context=server_context(), implicit_tls=implicit) as server:
        raw = socket.create_connection(server.address, timeout=10)
        if not implicit:
            assert read_reply(raw).startswith(b"220 ")
            raw.sendall(b"EHLO me.example\r\n")
            assert b"STARTTLS" in read_reply(raw)
            raw.sendall(b"STARTTLS\r\n")
            assert read_reply(raw).startswith(b"220 ")
        with client_context().wrap_socket(
            raw, server_hostname="localhost", suppress_ragged_eofs=False
        ) as sock:
            if implicit:
                assert read_reply(sock).startswith(b"220 ")
            sock.sendall(b"EHLO me.example\r\n")
            assert read_reply(sock).startswith(b"250")
            sock.sendall(b"QUIT\r\n")
            assert read_reply(sock).startswith(b"221 ")
            assert sock.recv(100) == b""  # close_notify, not SSLEOFError


class TLSPeer:
    """A one-session implicit-TLS SMTP server on a raw socket that refuses
    ragged EOFs: it answers the greeting, EHLO and QUIT, then records how the
    client's side ended (b"" for close_notify, else the exception), and
    answers the client's close_notify with its own unless *answer* is False."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.end: bytes | BaseException | None = None
        self.release = threading.Event()  # the peer closes once set (answer=False)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(10)
            with server_context().wrap_socket(conn, server_side=True, suppress_ragged_eofs=False) as tls:
                tls.sendall(b"220 peer.example ESMTP\r\n")
                assert tls.recv(4096).startswith(b"EHLO ")
                tls.sendall(b"250 peer.example\r\n")
                assert tls.recv(4096) == b"QUIT\r\n"
                tls.sendall(b"221 bye\r\n")
                try:
                    self.end = tls.recv(100)
                except (OSError, ValueError) as exc:
                    self.end = exc
                if self.answer:
                    with contextlib.suppress(OSError):  # the client may be gone already
                        tls.unwrap()
                else:
                    self.release.wait(30)
        finally:
            self.listener.close()

    def client(self) -> SMTPClient:
        options = ClientOptions(tls=TLSMode.IMPLICIT, server_hostname="localhost", timeouts=QUICK)
        return SMTPClient(*self.listener.getsockname(), options=options, ssl_context=client_context())


def test_client_sends_close_notify_after_quit() -> None:
    peer = TLSPeer()
    client = peer.client()
    client.connect()
    client.quit()
    peer.thread.join(10)
    assert peer.end == b""  # close_notify, not SSLEOFError


def test_client_close_does_not_wait_for_a_silent_peer() -> None:
    """The peer reads the client's close_notify but neither answers nor
    closes: quit() still returns (unwrap() is bounded by a short timeout)."""
    peer = TLSPeer(answer=False)
    client = peer.client()
    client.connect()
    quitting = threading.Thread(target=client.quit, daemon=True)
    quitting.start()
    quitting.join(30)  # a guard against a hang, far above the adapter's bound
    stuck = quitting.is_alive()
    peer.release.set()
    peer.thread.join(10)
    assert not stuck, "quit() hung waiting for the peer's close_notify"
    assert peer.end == b""


def test_trickled_command_meets_the_command_deadline() -> None:
    # RFC 5321 §4.5.3.2.7 gives a server a timeout per command: a client
    # that sends one octet of EHLO every 0.2 s meets a 0.5 s command
    # timeout before the line is complete, although no single read waits
    # that long (the continued reads keep the command's deadline).
    from smtpproto.flows import ServerTimeouts

    line = b"EHLO trickle.example\r\n"
    with ServerThread(Recorder(), timeouts=ServerTimeouts(command=0.5)) as server:
        with socket.create_connection(server.address[:2], timeout=10) as sock:
            assert sock.recv(512).startswith(b"220 ")
            answer = b""
            sent = 0
            for octet in line:
                sock.sendall(bytes([octet]))
                sent += 1
                sock.settimeout(0.2)
                try:
                    answer = sock.recv(512)
                except TimeoutError:
                    continue
                break
            sock.settimeout(10)
            after = sock.recv(512)
    assert sent < len(line) and answer.startswith(b"421 4.4.2 "), (sent, answer)
    assert after == b""
