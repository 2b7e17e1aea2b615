"""ClientConnection: sending rules, reply matching and reply parsing."""

from __future__ import annotations

import pytest

from smtpproto import (
    NEED_DATA,
    ClientConfig,
    ClientConnection,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Expn,
    Helo,
    Help,
    LocalProtocolError,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    RemoteProtocolError,
    Reply,
    Rset,
    State,
    UnknownCommand,
    Vrfy,
)

EHLO_REPLY = (
    b"250-server.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n"
)


def greeted(greeting: bytes = b"220 server.example ESMTP\r\n") -> ClientConnection:
    client = ClientConnection()
    client.receive_data(greeting)
    reply = client.next_event()
    assert isinstance(reply, Reply)
    return client


def reply(client: ClientConnection, data: bytes) -> Reply:
    client.receive_data(data)
    event = client.next_event()
    assert isinstance(event, Reply), event
    return event


def ready(ehlo_reply: bytes = EHLO_REPLY) -> ClientConnection:
    client = greeted()
    client.send(Ehlo(domain="client.example"))
    reply(client, ehlo_reply)
    assert client.state is State.READY
    return client


def in_data(mail: Mail | None = None) -> ClientConnection:
    client = ready()
    client.send(mail or Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.send(Data())
    reply(client, b"250 ok\r\n")
    reply(client, b"250 ok\r\n")
    reply(client, b"354 go\r\n")
    assert client.state is State.DATA
    return client


# -- greeting ------------------------------------------------------------


def test_nothing_may_be_sent_before_the_greeting() -> None:
    client = ClientConnection()
    assert client.state is State.CONNECTED
    with pytest.raises(LocalProtocolError, match="greeting"):
        client.send(Ehlo(domain="client.example"))
    assert client.next_event() is NEED_DATA


def test_greeting_is_read_and_answers_no_command() -> None:
    client = greeted(b"220-server.example\r\n220 welcome\r\n")
    assert client.state is State.GREETED
    assert client.last_command is None
    assert client.pending == ()


def test_554_greeting_allows_only_quit() -> None:
    client = greeted(b"554 5.7.1 go away\r\n")
    assert client.state is State.REFUSED
    with pytest.raises(LocalProtocolError, match="EHLO is not allowed in state REFUSED"):
        client.send(Ehlo(domain="client.example"))
    assert client.send(Quit()) == b"QUIT\r\n"
    reply(client, b"221 bye\r\n")
    assert client.state is State.CLOSED


def test_421_greeting_closes() -> None:
    client = greeted(b"421 4.3.2 busy\r\n")
    assert client.state is State.CLOSED
    assert isinstance(client.next_event(), ConnectionClosed)
    with pytest.raises(LocalProtocolError, match="CLOSED"):
        client.send(Quit())


# -- EHLO / HELO ---------------------------------------------------------


def test_ehlo_reply_becomes_capabilities() -> None:
    client = ready()
    caps = client.capabilities
    assert caps.domain == "server.example"
    assert caps.pipelining and caps.eightbitmime and caps.smtputf8 and caps.dsn
    assert caps.enhanced_status_codes and not caps.help
    assert caps.size == 1000
    assert "pipelining" in caps and 42 not in caps
    assert caps.params("size") == ("1000",)


@pytest.mark.parametrize("code", [500, 502])
def test_helo_fallback_after_ehlo_refused(code: int) -> None:
    client = greeted()
    client.send(Ehlo(domain="client.example"))
    reply(client, f"{code} 5.5.1 what\r\n".encode())
    assert client.state is State.GREETED
    assert client.send(Helo(domain="client.example")) == b"HELO client.example\r\n"
    reply(client, b"250 server.example\r\n")
    assert client.state is State.READY
    assert not client.capabilities.pipelining
    assert client.capabilities.size is None


def test_helo_after_ehlo_forgets_capabilities() -> None:
    client = ready()
    client.send(Helo(domain="client.example"))
    reply(client, b"250 server.example\r\n")
    assert client.capabilities.keywords == {}


def test_capabilities_keep_odd_lines_raw() -> None:
    client = ready(b"250-server.example hi\r\n250-AUTH=LOGIN PLAIN\r\n250-SIZE\r\n250 \r\n")
    caps = client.capabilities
    assert caps.raw == ("AUTH=LOGIN PLAIN", "SIZE", "")
    assert "AUTH=LOGIN" not in caps.keywords
    assert caps.size == 0


# -- sequencing and pipelining -------------------------------------------


def test_mail_needs_ehlo() -> None:
    client = greeted()
    with pytest.raises(LocalProtocolError, match="MAIL is not allowed in state GREETED"):
        client.send(Mail(reverse_path="a@example.org"))


def test_anytime_commands_before_ehlo() -> None:
    client = greeted()
    for command, wire in [
        (Noop(), b"NOOP\r\n"),
        (Help(topic="MAIL"), b"HELP MAIL\r\n"),
        (Vrfy(text="bob"), b"VRFY bob\r\n"),
        (Expn(text="list"), b"EXPN list\r\n"),
        (Rset(), b"RSET\r\n"),
    ]:
        assert client.send(command) == wire
        reply(client, b"250 ok\r\n")
        assert client.last_command == command
        assert client.state is State.GREETED


def test_whole_transaction_pipelined() -> None:
    client = ready()
    wire = (
        client.send(Mail(reverse_path="a@example.org", parameters={"SIZE": "10"}))
        + client.send(Rcpt(forward_path="b@example.org"))
        + client.send(Rcpt(forward_path="c@example.org"))
        + client.send(Data())
    )
    assert wire == (
        b"MAIL FROM:<a@example.org> SIZE=10\r\nRCPT TO:<b@example.org>\r\n"
        b"RCPT TO:<c@example.org>\r\nDATA\r\n"
    )
    assert client.projected_state() is State.DATA
    assert [type(c) for c in client.pending] == [Mail, Rcpt, Rcpt, Data]
    client.receive_data(b"250 ok\r\n550 no\r\n250 ok\r\n354 go\r\n")
    states = []
    for expected in (Mail, Rcpt, Rcpt, Data):
        event = client.next_event()
        assert isinstance(event, Reply)
        assert isinstance(client.last_command, expected)
        states.append(client.state)
    assert states == [State.MAIL, State.MAIL, State.RCPT, State.DATA]
    wire = client.send(MessageData(data=b"hello\n")) + client.send(EndOfMessage())
    assert wire == b"hello\r\n.\r\n"
    reply(client, b"250 2.0.0 queued\r\n")
    assert client.state is State.READY
    assert isinstance(client.last_command, EndOfMessage)


def test_data_refused_after_every_rcpt_failed() -> None:
    client = ready()
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.send(Data())
    client.receive_data(b"250 ok\r\n550 no\r\n554 5.5.1 no valid recipients\r\n")
    for _ in range(3):
        assert isinstance(client.next_event(), Reply)
    assert client.state is State.MAIL
    with pytest.raises(LocalProtocolError, match="after DATA got its 354"):
        client.send(MessageData(data=b"x"))


def test_354_after_every_rcpt_failed_is_a_server_bug() -> None:
    client = ready()
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.send(Data())
    client.receive_data(b"250 ok\r\n550 no\r\n354 go\r\n")
    client.next_event()
    client.next_event()
    with pytest.raises(RemoteProtocolError, match="unexpected 354 reply to DATA"):
        client.next_event()
    assert client.state is State.ERROR
    with pytest.raises(LocalProtocolError, match="after the connection failed"):
        client.next_event()
    with pytest.raises(LocalProtocolError, match="ERROR after: unexpected 354"):
        client.send(Quit())


def test_rcpt_after_failed_mail_leaves_state() -> None:
    client = ready()
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.receive_data(b"451 try later\r\n250 ok\r\n")
    client.next_event()
    assert client.state is State.READY
    client.next_event()
    assert client.state is State.READY
    # A 421 answering such a command still closes.
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.receive_data(b"550 no\r\n421 4.3.2 bye\r\n")
    client.next_event()
    client.next_event()
    assert client.state is State.CLOSED


def test_3xx_to_mail_is_a_server_bug() -> None:
    client = ready()
    client.send(Mail(reverse_path="a@example.org"))
    client.receive_data(b"354 what\r\n")
    with pytest.raises(RemoteProtocolError, match="unexpected 354 reply to MAIL"):
        client.next_event()


def test_no_pipelining_without_the_extension() -> None:
    client = ready(b"250-server.example\r\n250 8BITMIME\r\n")
    client.send(Mail(reverse_path="a@example.org"))
    with pytest.raises(LocalProtocolError, match="did not offer PIPELINING"):
        client.send(Rcpt(forward_path="b@example.org"))
    reply(client, b"250 ok\r\n")
    client.send(Rcpt(forward_path="b@example.org"))


@pytest.mark.parametrize(
    "last",
    [Data(), Noop(), Vrfy(text="x"), Expn(text="x"), Help(), UnknownCommand(name="xfoo")],
)
def test_end_of_batch_commands(last: Data | Noop | Vrfy | Expn | Help | UnknownCommand) -> None:
    client = ready()
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.send(last)
    with pytest.raises(LocalProtocolError, match="must end a pipelined batch"):
        client.send(Rset())


def test_max_pending() -> None:
    client = greeted()
    client.send(Ehlo(domain="client.example"))
    reply(client, EHLO_REPLY)
    client = ClientConnection(ClientConfig(max_pending=2))
    client.receive_data(b"220 hi\r\n" + EHLO_REPLY)
    client.next_event()
    client.send(Ehlo(domain="client.example"))
    client.next_event()
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    with pytest.raises(LocalProtocolError, match="more than 2 commands outstanding"):
        client.send(Rcpt(forward_path="c@example.org"))


def test_unknown_command_round() -> None:
    client = ready()
    assert client.send(UnknownCommand(name="xclient", argument="ADDR=1.2.3.4")) == (
        b"XCLIENT ADDR=1.2.3.4\r\n"
    )
    reply(client, b"220 ok\r\n")
    assert client.state is State.READY
    client.send(UnknownCommand(name="XFOO"))
    with pytest.raises(RemoteProtocolError, match="unexpected 354 reply to XFOO"):
        reply(client, b"354 what\r\n")


def test_unknown_command_not_in_data() -> None:
    client = in_data()
    with pytest.raises(LocalProtocolError, match="cannot send XFOO in state DATA"):
        client.send(UnknownCommand(name="XFOO"))


# -- parameters and addresses --------------------------------------------


def test_parameter_of_unoffered_extension_refused() -> None:
    client = ready(b"250-server.example\r\n250 PIPELINING\r\n")
    with pytest.raises(LocalProtocolError, match="SIZE needs the SIZE extension"):
        client.send(Mail(reverse_path="a@example.org", parameters={"SIZE": "10"}))
    with pytest.raises(LocalProtocolError, match="NOTIFY needs the DSN extension"):
        client.send(Mail(reverse_path="a@example.org", parameters={"NOTIFY": "NEVER"}))
    # A parameter the core does not model is the caller's business.
    assert client.send(Mail(reverse_path="a@example.org", parameters={"X-FOO": "1"})) == (
        b"MAIL FROM:<a@example.org> X-FOO=1\r\n"
    )


def test_parameter_value_checked() -> None:
    client = ready()
    with pytest.raises(LocalProtocolError, match="SIZE needs a decimal number"):
        client.send(Mail(reverse_path="a@example.org", parameters={"SIZE": "big"}))
    with pytest.raises(LocalProtocolError, match="BODY must be 7BIT, 8BITMIME or BINARYMIME"):
        client.send(Mail(reverse_path="a@example.org", parameters={"BODY": "9BIT"}))


def test_non_ascii_addresses_need_smtputf8() -> None:
    client = ready()
    with pytest.raises(LocalProtocolError, match="needs the SMTPUTF8 parameter"):
        client.send(Mail(reverse_path="jøran@example.org"))
    client.send(Mail(reverse_path="a@example.org"))
    with pytest.raises(LocalProtocolError, match="needs the SMTPUTF8 parameter"):
        client.send(Rcpt(forward_path="用户@例子.广告"))
    client.send(Rset())
    reply(client, b"250 ok\r\n")
    reply(client, b"250 ok\r\n")
    wire = client.send(Mail(reverse_path="jøran@example.org", parameters={"SMTPUTF8": None}))
    assert wire == "MAIL FROM:<jøran@example.org> SMTPUTF8\r\n".encode()
    assert client.send(Rcpt(forward_path="用户@例子.广告")) == "RCPT TO:<用户@例子.广告>\r\n".encode()


def test_failed_mail_forgets_its_parameters() -> None:
    client = ready()
    client.send(Mail(reverse_path="a@example.org", parameters={"SMTPUTF8": None}))
    reply(client, b"550 no\r\n")
    client.send(Mail(reverse_path="a@example.org"))
    reply(client, b"250 ok\r\n")
    with pytest.raises(LocalProtocolError, match="SMTPUTF8"):
        client.send(Rcpt(forward_path="用户@例子.广告"))


def test_command_line_limit_with_extension_allowance() -> None:
    client = ready()
    long_text = "x" * 600
    with pytest.raises(LocalProtocolError, match="NOOP command line of 607 octets exceeds 512"):
        client.send(Noop(text=long_text))
    envid = "+2B" * 100  # xtext of 100 "+" characters, the longest ENVID
    mail = Mail(
        reverse_path=("l" * 64) + "@" + ("d" * 60 + ".") * 3 + "examp",  # a 255-octet path
        parameters={"SIZE": "1", "RET": "FULL", "ENVID": envid, "BODY": "8BITMIME"},
    )
    assert len(client.send(mail)) > 512


# -- message content -----------------------------------------------------


def test_content_before_354_refused() -> None:
    client = ready()
    with pytest.raises(LocalProtocolError, match="state READY"):
        client.send(MessageData(data=b"x"))
    with pytest.raises(LocalProtocolError, match="EndOfMessage may only be sent"):
        client.send(EndOfMessage())


def test_8bit_content_needs_8bitmime() -> None:
    client = in_data()
    with pytest.raises(LocalProtocolError, match="BODY=8BITMIME"):
        client.send(MessageData(data="café".encode()))
    assert client.send(MessageData(data=memoryview(b"plain"))) == b"plain"
    client = in_data(Mail(reverse_path="a@example.org", parameters={"BODY": "8bitmime"}))
    assert client.send(MessageData(data="café".encode())) == "café".encode()
    client = in_data(Mail(reverse_path="a@example.org", parameters={"SMTPUTF8": None}))
    assert client.send(MessageData(data=memoryview("café".encode()))) == "café".encode()


def test_content_is_stuffed_and_terminated() -> None:
    client = in_data()
    wire = client.send(MessageData(data=b".first\nsecond\r")) + client.send(
        MessageData(data=b"\n.\r\n..x")
    )
    wire += client.send(EndOfMessage())
    assert wire == b"..first\r\nsecond\r\n..\r\n...x\r\n.\r\n"


def test_line_length_limit_configurable() -> None:
    client = in_data()
    with pytest.raises(LocalProtocolError, match="exceeds the limit of 1000"):
        client.send(MessageData(data=b"x" * 999 + b"\n"))
    client = ClientConnection(ClientConfig(max_line_length=None))
    client.receive_data(b"220 hi\r\n" + EHLO_REPLY)
    client.next_event()
    client.send(Ehlo(domain="client.example"))
    client.next_event()
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.send(Data())
    client.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    for _ in range(3):
        client.next_event()
    assert client.send(MessageData(data=b"x" * 5000)) == b"x" * 5000


# -- replies from the server ---------------------------------------------


def test_unprompted_421_closes() -> None:
    client = ready()
    event = reply(client, b"421 4.3.2 shutting down\r\n")
    assert event.code == 421 and event.enhanced == "4.3.2"
    assert client.state is State.CLOSED
    assert client.last_command is None
    assert isinstance(client.next_event(), ConnectionClosed)


def test_unprompted_other_reply_is_an_error() -> None:
    client = ready()
    client.receive_data(b"250 surprise\r\n")
    with pytest.raises(RemoteProtocolError, match="no command outstanding"):
        client.next_event()


def test_reply_line_too_long() -> None:
    client = ClientConnection(ClientConfig(max_reply_line=512))
    client.receive_data(b"220 " + b"x" * 600)
    with pytest.raises(RemoteProtocolError, match="longer than 512"):
        client.next_event()


def test_too_many_reply_lines() -> None:
    client = ClientConnection(ClientConfig(max_reply_lines=3))
    client.receive_data(b"220-a\r\n220-b\r\n220-c\r\n220 d\r\n")
    with pytest.raises(RemoteProtocolError, match="longer than 3 lines"):
        client.next_event()


def test_bare_lf_reply_strict_and_lenient() -> None:
    client = ClientConnection()
    client.receive_data(b"220 hi\n")
    with pytest.raises(RemoteProtocolError, match="bare LF"):
        client.next_event()
    client = ClientConnection(ClientConfig(lenient=True))
    client.receive_data(b"220 hi\n")
    event = client.next_event()
    assert isinstance(event, Reply) and event.text == ("hi",)


def test_eof_closes() -> None:
    client = ready()
    client.send(Quit())
    client.receive_data(b"")
    assert isinstance(client.next_event(), ConnectionClosed)
    assert client.state is State.CLOSED
    assert [type(c) for c in client.pending] == [Quit]


def test_reply_split_across_reads() -> None:
    client = greeted()
    client.send(Ehlo(domain="client.example"))
    for byte in EHLO_REPLY[:-1]:
        client.receive_data(bytes([byte]))
        assert client.next_event() is NEED_DATA
    client.receive_data(EHLO_REPLY[-1:])
    assert isinstance(client.next_event(), Reply)


def test_3xx_greeting_is_a_server_bug() -> None:
    client = ClientConnection()
    client.receive_data(b"354 hello\r\n")
    with pytest.raises(RemoteProtocolError, match="unexpected 354 reply to the greeting"):
        client.next_event()


def test_3xx_to_end_of_data_is_a_server_bug() -> None:
    client = in_data()
    client.send(EndOfMessage())
    client.receive_data(b"354 again?\r\n")
    with pytest.raises(RemoteProtocolError, match="unexpected 354 reply to the end of data"):
        client.next_event()


def test_projected_state_skips_commands_sent_out_of_sequence() -> None:
    client = ready()
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.send(Rset())
    assert client.projected_state() is State.READY
    client.receive_data(b"550 no\r\n")
    client.next_event()
    # The MAIL failed: the RCPT cannot apply in READY, the RSET still does.
    assert client.projected_state() is State.READY
    assert client.state is State.READY


def test_trailing_data_and_eof() -> None:
    client = greeted()
    client.receive_data(b"250 partial")
    assert client.next_event() is NEED_DATA
    client.receive_data(b"")
    assert client.trailing_data == (b"250 partial", True)
    with pytest.raises(LocalProtocolError, match="after EOF"):
        client.receive_data(b"more")


def test_client_sends_no_replies() -> None:
    client = ready()
    with pytest.raises(LocalProtocolError, match="cannot send Reply"):
        client.send(Reply(code=250))


@pytest.mark.parametrize(
    "field,value",
    [
        ("max_reply_line", 100),
        ("max_reply_lines", 0),
        ("max_pending", 0),
        ("max_command_line", 10),
        ("max_line_length", 2),
    ],
)
def test_client_config_validation(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        ClientConfig(**{field: value})  # type: ignore[arg-type]
