"""ClientSession.send_many: a batch of messages pipelined across messages
(RFC 2920 §3.1: the content may start a group, DATA ends one).

In memory only: against the real server flow (flowpair.Link), and against
a scripted server (``Behaviour`` below, on flowpair.Script) for refusals,
421s and hang-ups at any point.  The property at the end checks that a
batch gives every message the outcome ``send()`` gives it alone, against
the same scripted behaviour.  The core rule the batch stands on (MAIL
after the end of data, its reply still due) is tested at the bottom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowpair import Link, Recorder, Script
from helpers import drain
from smtpproto import (
    ClientConnection,
    Data,
    Ehlo,
    EndOfMessage,
    LocalProtocolError,
    Mail,
    MessageData,
    Rcpt,
    Reply,
    ServerConfig,
    State,
)
from smtpproto.flows import ClientOptions, ClientSession, Outgoing, SendResult, TLSMode, errors, prepare

SENDER = "alice@example.org"
OPTIONS = ClientOptions(tls=TLSMode.NEVER)


def message(index: int, recipients: list[str] | None = None, body: bytes = b"") -> Outgoing:
    content = b"Subject: %d\r\nMessage-ID: <%d@example.org>\r\n\r\nbody %d\r\n.dot\r\n" % (index, index, index)
    return prepare(content + body, SENDER, recipients or ["bob@example.org"])


# -- a scripted server ----------------------------------------------------------


@dataclass
class Behaviour:
    """How a scripted server answers, per message (counted by MAIL lines,
    from 0): ``codes[(message, what)]`` for what in "MAIL", "DATA", "." or
    a recipient; 250 (354 for DATA) otherwise.  ``end`` is (message, what,
    how): at that command the server answers 421 ("421") or hangs up
    ("hangup").  Like a real server, it answers RCPT after a refused MAIL
    and DATA without an accepted RCPT with 503/554."""

    codes: dict[tuple[int, str], int] = field(default_factory=dict)
    end: tuple[int, str, str] | None = None
    pipelining: bool = True
    limits: int | None = None  # LIMITS RCPTMAX (RFC 9422)
    mailmax: int | None = None  # LIMITS MAILMAX
    message: int = -1
    mail_ok: bool = False
    rcpt_ok: bool = False
    over: bool = False

    def answer(self, line: bytes) -> bytes | None:
        if self.over:
            return None
        verb = line[:4].upper()
        if verb == b"EHLO":
            lines = [b"fake.example"] + [b"PIPELINING"] * self.pipelining
            if self.limits is not None:
                lines.append(b"LIMITS RCPTMAX=%d" % self.limits)
            if self.mailmax is not None:
                lines.append(b"LIMITS MAILMAX=%d" % self.mailmax)
            return b"".join(b"250-%s\r\n" % line for line in lines[:-1]) + b"250 %s\r\n" % lines[-1]
        if verb in (b"RSET", b"QUIT"):
            self.mail_ok = self.rcpt_ok = False
            return b"250 2.0.0 OK\r\n" if verb == b"RSET" else b"221 2.0.0 Bye\r\n"
        if verb == b"MAIL":
            self.message += 1
            what = "MAIL"
        elif verb == b"RCPT":
            what = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
        elif verb == b"DATA":
            what = "DATA"
        else:
            assert line == b".", line
            what = "."
        if self.end is not None and self.end[:2] == (self.message, what):
            self.over = True
            return b"421 4.3.0 closing\r\n" if self.end[2] == "421" else None
        if what == "MAIL":
            code = self.codes.get((self.message, what), 250)
            self.mail_ok = code == 250
            self.rcpt_ok = False
        elif what == "DATA":
            code = 503 if not self.mail_ok else 554 if not self.rcpt_ok else self.codes.get((self.message, what), 354)
        elif what == ".":
            code = self.codes.get((self.message, what), 250)
            self.mail_ok = self.rcpt_ok = False
        elif not self.mail_ok:
            code = 503
        else:
            code = self.codes.get((self.message, what), 250)
            self.rcpt_ok = self.rcpt_ok or code == 250
        if code in (250, 354):
            return b"%d go ahead\r\n" % code
        return b"%d 5.0.0 refused %s\r\n" % (code, what.encode())


def batch(behaviour: Behaviour, messages: list[Outgoing]) -> tuple[list[Any], Script]:
    script = Script(behaviour.answer)
    session = new_session()
    script.run(session.open())
    return script.run(session.send_many(messages)), script


def one_by_one(behaviour: Behaviour, messages: list[Outgoing]) -> tuple[list[Any], Script]:
    script = Script(behaviour.answer)
    session = new_session()
    script.run(session.open())
    outcomes: list[Any] = []
    for outgoing in messages:
        try:
            outcomes.append(script.run(session.send(outgoing)))
        except errors.SMTPError as exc:
            outcomes.append(exc)
    return outcomes, script


def new_session() -> ClientSession:
    return ClientSession(OPTIONS)


def describe(outcome: Any) -> tuple[Any, ...]:
    """What a test compares of an outcome."""
    if isinstance(outcome, SendResult):
        return ("sent", outcome.accepted, outcome.refused, outcome.replies, outcome.data_reply, outcome.pipelined)
    assert isinstance(outcome, errors.SMTPError), outcome
    if isinstance(outcome, errors.SMTPReplyError):
        return (type(outcome).__name__, outcome.step, outcome.reply)
    if isinstance(outcome, errors.RecipientsRefused):
        return (type(outcome).__name__, outcome.replies)
    return (type(outcome).__name__,)


def kinds(outcomes: list[Any]) -> list[str]:
    return [type(outcome).__name__ for outcome in outcomes]


# -- against the real server flow -------------------------------------------------


def test_each_write_carries_one_content_and_the_next_transaction() -> None:
    recorder = Recorder()
    link = Link(recorder, options=OPTIONS)
    link.open()
    messages = [message(index) for index in range(5)]
    before = len(link.client_writes)
    outcomes = link.run(link.client.send_many(messages))
    assert kinds(outcomes) == ["SendResult"] * 5
    assert all(result.pipelined and result.accepted == ("bob@example.org",) for result in outcomes)
    writes = link.client_writes[before:]
    # MAIL+RCPT+DATA of message 0; then content 0 + dot + MAIL..DATA of 1,
    # ... ; then content 4 + dot alone: six writes for five messages.
    assert len(writes) == 6
    assert writes[0].startswith(b"MAIL FROM:<alice@example.org>") and writes[0].endswith(b"DATA\r\n")
    for index, write in enumerate(writes[1:5]):
        content, dot, rest = write.partition(b"\r\n.\r\n")
        assert dot and content.startswith(b"Subject: %d\r\n" % index)
        assert rest.startswith(b"MAIL FROM:") and rest.endswith(b"RCPT TO:<bob@example.org>\r\nDATA\r\n")
    assert writes[5].startswith(b"Subject: 4\r\n") and writes[5].endswith(b"\r\n.\r\n")
    envelopes = recorder.args("message")
    assert [env[0].content for env in envelopes] == [
        b"Subject: %d\r\nMessage-ID: <%d@example.org>\r\n\r\nbody %d\r\n.dot\r\n" % (i, i, i) for i in range(5)
    ]
    assert link.client.conn.state is State.READY and not link.client.conn.pending
    link.run(link.client.quit())


def test_the_next_message_is_taken_while_the_server_works_on_the_write_before() -> None:
    # Each message after the first is taken from the iterable once the write
    # carrying the envelope before it is out and before that write's replies
    # are read: its building overlaps the round trip.
    link = Link(Recorder(), options=OPTIONS)
    link.open()
    before = len(link.client_writes)
    seen: list[tuple[int, int]] = []

    def messages() -> Any:
        for index in range(4):
            seen.append((len(link.client_writes) - before, len(link.client.conn.pending)))
            yield message(index)

    outcomes = link.run(link.client.send_many(messages()))
    assert kinds(outcomes) == ["SendResult"] * 4
    # (writes made, commands awaiting replies): message 0 before any write;
    # message 1 behind MAIL, RCPT and DATA of message 0; each later one
    # behind the previous content's dot and the next MAIL, RCPT, DATA.
    assert seen == [(0, 0), (1, 3), (2, 4), (3, 4)]
    link.run(link.client.quit())


def test_an_error_of_the_iterable_taken_ahead_comes_where_it_was_due() -> None:
    # The iterable fails when the batch takes its third message, ahead of
    # time (while the write with the first content and the second envelope
    # is out): the error is raised when the third message is due, after
    # those replies are read.  The first message is delivered; the second's
    # DATA was accepted and its content not sent, so the connection is
    # closed before the error propagates.
    recorder = Recorder()
    link = Link(recorder, options=OPTIONS)
    link.open()

    def messages() -> Any:
        yield message(0)
        yield message(1)
        raise KeyError("the third message")

    with pytest.raises(KeyError, match="the third message"):
        link.run(link.client.send_many(messages()))
    assert [env[0].content.split(b"\r\n")[0] for env in recorder.args("message")] == [b"Subject: 0"]
    assert link.client._closed


def test_a_server_without_pipelining_gets_one_message_at_a_time() -> None:
    recorder = Recorder()
    link = Link(recorder, ServerConfig(pipelining=False), options=OPTIONS)
    link.open()
    outcomes = link.run(link.client.send_many([message(index) for index in range(3)]))
    assert kinds(outcomes) == ["SendResult"] * 3
    assert not any(result.pipelined for result in outcomes)
    # MAIL, RCPT, DATA, content+dot: four writes per message, one command each.
    assert all(write.count(b"\r\n") == 1 for write in link.client_writes[1:] if not write.startswith(b"Subject"))
    assert len(recorder.args("message")) == 3


def test_bdat_messages_go_one_at_a_time() -> None:
    recorder = Recorder()
    link = Link(recorder, options=ClientOptions(tls=TLSMode.NEVER, chunking=True))
    link.open()
    outcomes = link.run(link.client.send_many([message(index) for index in range(3)]))
    assert kinds(outcomes) == ["SendResult"] * 3
    assert all(result.chunked for result in outcomes)
    assert [env[0].chunked for env in recorder.args("message")] == [True] * 3
    # send() for each: its final reply is read before the next MAIL goes out.
    assert not any(b"MAIL FROM:" in write and not write.startswith(b"MAIL") for write in link.client_writes)


def test_a_message_over_rcptmax_waits_for_the_batch_before_it() -> None:
    behaviour = Behaviour(limits=2)
    many = ["bob@example.org", "carol@example.org", "dave@example.org"]
    outcomes, script = batch(behaviour, [message(0), message(1, many), message(2)])
    assert kinds(outcomes) == ["SendResult"] * 3
    assert outcomes[1].accepted == tuple(many)
    # Message 1 went in two transactions of its own (four MAILs in all):
    # message 0's dot was answered first, and message 2's MAIL waited for
    # message 1's last dot.
    assert sum(line.startswith(b"MAIL") for line in script.lines) == 4
    assert not any(b"\r\n.\r\nMAIL FROM:" in write for write in script.writes)


# -- refusals in the middle of a batch ----------------------------------------------


def test_refusals_in_the_middle_of_a_batch() -> None:
    behaviour = Behaviour(
        codes={
            (1, "MAIL"): 550,  # sender refused
            (2, "bob@example.org"): 550,  # every recipient refused
            (3, "DATA"): 554,  # DATA refused
            (4, "."): 554,  # message refused after its content
            (5, "bob@example.org"): 451,  # one of two recipients refused
        }
    )
    messages = [message(i) for i in range(5)] + [message(5, ["bob@example.org", "carol@example.org"]), message(6)]
    outcomes, script = batch(behaviour, messages)
    assert kinds(outcomes) == [
        "SendResult", "SenderRefused", "RecipientsRefused", "DataRefused", "MessageRefused", "SendResult", "SendResult",
    ]
    assert outcomes[1].reply.code == 550 and outcomes[1].step == "MAIL"
    assert outcomes[2].replies["bob@example.org"].code == 550
    assert outcomes[3].reply.code == 554 and outcomes[3].step == "DATA"
    assert outcomes[4].reply.code == 554 and outcomes[4].step == "message"
    assert outcomes[5].accepted == ("carol@example.org",)
    assert outcomes[5].refused["bob@example.org"].code == 451
    # A transaction left open (MAIL accepted, then no recipient or no 354)
    # is reset in the next group, before its MAIL; a refused MAIL needs none.
    lines = script.lines
    mails = [index for index, line in enumerate(lines) if line.startswith(b"MAIL")]
    assert lines[mails[2] - 1] != b"RSET"  # after message 1's refused MAIL
    assert lines[mails[3] - 1] == b"RSET"  # after message 2's refused recipients
    assert lines[mails[4] - 1] == b"RSET"  # after message 3's refused DATA
    assert lines.count(b"RSET") == 2
    # Each RSET went out in the same write as the MAIL after it.
    assert all(b"RSET\r\nMAIL FROM:" in write for write in script.writes if b"RSET" in write)
    alone, _ = one_by_one(Behaviour(codes=behaviour.codes), messages)
    assert [describe(o) for o in outcomes] == [describe(o) for o in alone]


def test_the_last_message_refused_half_way_is_reset_before_the_batch_returns() -> None:
    behaviour = Behaviour(codes={(1, "DATA"): 451})
    outcomes, script = batch(behaviour, [message(0), message(1)])
    assert kinds(outcomes) == ["SendResult", "DataRefused"]
    assert script.lines[-1] == b"RSET"


def test_a_message_the_server_lacks_an_extension_for_is_refused_alone() -> None:
    eight_bit = prepare(b"Subject: caf\xc3\xa9\r\n\r\n\xc3\xa9\r\n", SENDER, ["bob@example.org"])
    outcomes, script = batch(Behaviour(), [message(0), eight_bit, message(2)])
    assert kinds(outcomes) == ["SendResult", "NotSupported", "SendResult"]
    assert sum(line.startswith(b"MAIL") for line in script.lines) == 2
    # Message 2 still shared a write with message 0's content.
    assert any(b"body 0\r\n..dot\r\n.\r\nMAIL FROM:" in write for write in script.writes)


def test_a_message_without_recipients_is_an_outcome_not_an_exception() -> None:
    empty = Outgoing(sender=SENDER, recipients=[], chunks=[b"x\r\n"])
    outcomes, _ = batch(Behaviour(), [message(0), empty, message(2)])
    assert kinds(outcomes) == ["SendResult", "SMTPError", "SendResult"]
    assert isinstance(outcomes[1].__cause__, ValueError)


def test_mail_commands_over_mailmax_are_outcomes() -> None:
    outcomes, script = batch(Behaviour(mailmax=2), [message(i) for i in range(4)])
    assert kinds(outcomes) == ["SendResult", "SendResult", "SMTPError", "SMTPError"]
    assert all(isinstance(o.__cause__, LocalProtocolError) for o in outcomes[2:])
    assert "MAILMAX=2" in str(outcomes[2])
    # The core refused them before a byte was queued; message 1 still got
    # its content and its reply, and the session stays open.
    assert sum(line.startswith(b"MAIL") for line in script.lines) == 2
    assert sum(write.count(b"\r\n.\r\n") for write in script.writes) == 2
    assert not script.closed


# -- failures that end the session -------------------------------------------------


@pytest.mark.parametrize("how", ["421", "hangup"])
def test_a_session_ending_at_a_final_dot_fails_that_message_and_the_rest(how: str) -> None:
    outcomes, script = batch(Behaviour(end=(2, ".", how)), [message(i) for i in range(5)])
    assert kinds(outcomes[:2]) == ["SendResult", "SendResult"]
    # Message 2's reply never came (or was the 421): not delivered.
    expected = "MessageRefused" if how == "421" else "Disconnected"
    assert kinds(outcomes[2:]) == [expected] * 3
    assert outcomes[3] is outcomes[2] and outcomes[4] is outcomes[2]
    assert outcomes[2].temporary
    assert script.closed
    # Message 3's MAIL went out with message 2's content, never answered.
    assert any(b"body 2\r\n..dot\r\n.\r\nMAIL FROM:" in write for write in script.writes)


@pytest.mark.parametrize("what", ["MAIL", "bob@example.org", "DATA"])
def test_a_421_to_a_command_of_the_batch(what: str) -> None:
    outcomes, script = batch(Behaviour(end=(1, what, "421")), [message(i) for i in range(4)])
    assert isinstance(outcomes[0], SendResult)  # its 250 came before the 421
    assert isinstance(outcomes[1], errors.SMTPError) and outcomes[1].temporary
    assert outcomes[2] is outcomes[1] and outcomes[3] is outcomes[1]
    assert script.closed
    alone, _ = one_by_one(Behaviour(end=(1, what, "421")), [message(i) for i in range(4)])
    assert describe(outcomes[1]) == describe(alone[1])


def test_a_lost_connection_fails_the_message_whose_reply_never_came() -> None:
    outcomes, script = batch(Behaviour(end=(1, "MAIL", "hangup")), [message(i) for i in range(3)])
    # Message 0's final reply was answered before the hang-up at message 1's MAIL.
    assert kinds(outcomes) == ["SendResult", "Disconnected", "Disconnected"]
    assert outcomes[2] is outcomes[1]


def test_content_that_fails_closes_the_session_and_fails_the_rest() -> None:
    long_line = prepare(b"Subject: long\r\n\r\n" + b"x" * 1200 + b"\r\n", SENDER, ["bob@example.org"])
    outcomes, script = batch(Behaviour(), [message(0), long_line, message(2)])
    assert kinds(outcomes) == ["SendResult", "SMTPError", "Disconnected"]
    assert isinstance(outcomes[1].__cause__, LocalProtocolError)
    assert script.closed
    # Message 0 was delivered: its dot went out (with message 1's MAIL)
    # before the long content was refused, and its reply was read; no
    # byte of the long content went out, and no dot after it.
    assert sum(write.count(b"\r\n.\r\n") for write in script.writes) == 1
    assert not any(b"xxxx" in write for write in script.writes)


def test_an_iterable_that_raises_closes_a_message_half_sent_and_propagates() -> None:
    def messages() -> Any:
        yield message(0)
        raise RuntimeError("no more")

    script = Script(Behaviour().answer)
    session = new_session()
    script.run(session.open())
    with pytest.raises(RuntimeError, match="no more"):
        script.run(session.send_many(messages()))
    # Message 0 had its 354; its content was never sent, and never ended.
    assert script.closed
    assert not any(b"body 0" in write for write in script.writes)


def test_a_batch_after_the_session_ended_fails_every_message() -> None:
    script = Script(Behaviour().answer)
    session = new_session()
    script.run(session.open())
    script.run(session.quit())
    outcomes = script.run(session.send_many([message(0), message(1)]))
    assert kinds(outcomes) == ["Disconnected", "Disconnected"]


# -- the property -------------------------------------------------------------------

RECIPIENTS = ["bob@example.org", "carol@example.org", "dave@example.org"]
WHATS = ["MAIL", "DATA", "."] + RECIPIENTS


@st.composite
def scenarios(draw: Any) -> tuple[Behaviour, list[Outgoing]]:
    count = draw(st.integers(1, 5))
    messages = [
        message(index, draw(st.lists(st.sampled_from(RECIPIENTS), min_size=1, max_size=3, unique=True)))
        for index in range(count)
    ]
    codes = draw(
        st.dictionaries(
            st.tuples(st.integers(0, count - 1), st.sampled_from(WHATS)),
            st.sampled_from([250, 451, 452, 550, 554]),
            max_size=6,
        )
    )
    end = draw(
        st.none()
        | st.tuples(st.integers(0, count - 1), st.sampled_from(WHATS), st.sampled_from(["421", "hangup"]))
    )
    pipelining = draw(st.booleans())
    return Behaviour(codes=codes, end=end, pipelining=pipelining), messages


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_a_batch_gives_each_message_what_send_gives_it_alone(scenario: tuple[Behaviour, list[Outgoing]]) -> None:
    behaviour, messages = scenario
    expected, _ = one_by_one(Behaviour(behaviour.codes, behaviour.end, behaviour.pipelining), messages)
    got, script = batch(Behaviour(behaviour.codes, behaviour.end, behaviour.pipelining), messages)
    assert len(got) == len(expected) == len(messages)
    # Up to the message at which the session ended, outcome for outcome;
    # after it, send() says the session is over, and the batch repeats the
    # error that ended it.
    ending = next((i for i, outcome in enumerate(expected) if _ended_session(expected, i)), None)
    for index, (mine, theirs) in enumerate(zip(got, expected)):
        if ending is None or index <= ending:
            assert describe(mine) == describe(theirs), index
        else:
            assert isinstance(theirs, errors.Disconnected)
            assert mine is got[ending] or (
                isinstance(mine, errors.Disconnected) and isinstance(got[ending], SendResult)
            )
    if ending is not None:
        assert script.closed
    # Nothing is ever reported delivered that the server did not accept.
    accepted_dots = _accepted_messages(behaviour, messages)
    for index, outcome in enumerate(got):
        if isinstance(outcome, SendResult):
            assert index in accepted_dots


def _ended_session(outcomes: list[Any], index: int) -> bool:
    """True when send() for message *index* ended the session: the next
    message, if any, found it over."""
    later = outcomes[index + 1 :]
    return bool(later) and all(
        isinstance(o, errors.Disconnected) and "over" in str(o) for o in later
    ) and not (isinstance(outcomes[index], errors.Disconnected) and "over" in str(outcomes[index]))


def _accepted_messages(behaviour: Behaviour, messages: list[Outgoing]) -> set[int]:
    """Messages whose final dot the behaviour would accept with 250."""
    return {
        index
        for index in range(len(messages))
        if behaviour.codes.get((index, "."), 250) == 250 and behaviour.end != (index, ".", "421")
    }


# -- the core rule ------------------------------------------------------------------


def _greeted(pipelining: bool) -> ClientConnection:
    client = ClientConnection()
    client.receive_data(b"220 hi\r\n")
    drain(client)
    client.send(Ehlo(domain="client.example"))
    client.receive_data(b"250-hi\r\n250 PIPELINING\r\n" if pipelining else b"250 hi\r\n")
    drain(client)
    return client


def _in_data(client: ClientConnection) -> None:
    """MAIL, RCPT and DATA, each answered before the next is sent."""
    for command, answer in ((Mail(reverse_path=SENDER), b"250 ok\r\n"),
                            (Rcpt(forward_path="bob@example.org"), b"250 ok\r\n"),
                            (Data(), b"354 go\r\n")):
        client.send(command)
        client.receive_data(answer)
        drain(client)
    assert client.state is State.DATA


def test_core_mail_may_follow_the_end_of_data_before_its_reply() -> None:
    client = _greeted(pipelining=True)
    _in_data(client)
    wire = client.send(MessageData(data=b"one\r\n")) + client.send(EndOfMessage())
    mail, rcpt, data = Mail(reverse_path=SENDER), Rcpt(forward_path="carol@example.org"), Data()
    wire += client.send(mail) + client.send(rcpt) + client.send(data)
    assert wire == b"one\r\n.\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n"
    assert client.pending == (EndOfMessage(), mail, rcpt, data)
    assert client.projected_state() is State.DATA
    # Content for the second message must wait for its 354.
    with pytest.raises(LocalProtocolError, match="354"):
        client.send(MessageData(data=b"two\r\n"))
    # The replies are matched in order: the end of data first.
    client.receive_data(b"250 queued\r\n250 sender\r\n")
    assert [r.code for r in drain(client)] == [250, 250]  # type: ignore[attr-defined]
    assert client.last_command == mail and client.state is State.MAIL
    assert client.pending == (rcpt, data)
    client.receive_data(b"250 rcpt\r\n354 go\r\n")
    drain(client)
    assert client.state is State.DATA and client.last_command == data
    assert client.accepted_recipients == (rcpt,)
    assert client.send(MessageData(data=b"two\r\n")) == b"two\r\n"


def test_core_a_refused_end_of_data_still_lets_the_next_transaction_run() -> None:
    client = _greeted(pipelining=True)
    _in_data(client)
    client.send(EndOfMessage())
    client.send(Mail(reverse_path=SENDER))
    client.receive_data(b"554 no\r\n250 sender\r\n")
    replies = drain(client)
    assert [r.code for r in replies] == [554, 250]  # type: ignore[attr-defined]
    assert client.state is State.MAIL and client.accepted_recipients == ()


def test_core_a_421_to_the_end_of_data_closes_with_the_next_commands_unanswered() -> None:
    client = _greeted(pipelining=True)
    _in_data(client)
    client.send(EndOfMessage())
    client.send(Mail(reverse_path=SENDER))
    client.receive_data(b"421 bye\r\n")
    assert [r.code for r in drain(client) if isinstance(r, Reply)] == [421]
    assert client.state is State.CLOSED


def test_core_without_pipelining_mail_waits_for_the_end_of_data_reply() -> None:
    client = _greeted(pipelining=False)
    _in_data(client)
    client.send(EndOfMessage())
    with pytest.raises(LocalProtocolError, match="PIPELINING"):
        client.send(Mail(reverse_path=SENDER))
    assert client.pending == (EndOfMessage(),)
