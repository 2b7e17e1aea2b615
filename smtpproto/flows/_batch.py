# Theory of operation
# -------------------
# ``send_batch(session, messages)`` is ``ClientSession.send_many()``: a
# batch of messages over one session, pipelined across messages.  Each
# write after the first carries the content and final dot of one message
# and, behind them, the MAIL, RCPT... and DATA of the next (after a RSET
# when the message before was refused half way); then the replies are
# read, in order.  RFC 2920 §3.1 allows it: "the actual transfer of
# message content is explicitly allowed to be the first command in a
# group", and DATA must end one.  So a message costs one round trip, where
# ``send()`` takes two (its content waits for the 354 with nothing behind
# it).  Once a group is written and before its replies are read, the next
# message is taken from the caller's iterable and its MAIL and RCPT events
# are made (``_Ahead``), and the content of the message whose DATA ends
# the group is stuffed (``ClientConnection.stuff_content``, for content
# that is one bytes object of at most 64 KiB: a stream is not read before
# its 354), so that work overlaps the server's instead of adding to each
# round trip.  A message that cannot go so (no PIPELINING, BDAT, LMTP,
# more recipients than LIMITS RCPTMAX) goes by ``send()``, on its own,
# after the replies the batch still awaits.
#
# The outcome is one per message, in order: a ``SendResult``, or the error
# ``send()`` would have raised for it alone.  A failure that ends the
# session is the outcome of the message it struck and of every later one,
# and a message whose reply to the final dot never came is never reported
# delivered.  Refusals leave the session ready for the next message.
#
# The batch runs once per message, so it is written for speed: one
# generator per group (``_batch_group``) with the reading of replies
# inline, since each call saved is CPU saved; a transaction's reply steps
# are made once per number of recipients, and the result of a message
# every recipient got is built without the frozen dataclass's __init__.
# The functions take the session as their first argument and use its
# plumbing (``_exchange``) and its cached envelope events directly: a
# batch is no object of its own, and ``send_batch`` is the generator the
# adapter runs (``send_many()`` returns it), so no layer sits between the
# batch and its actions.
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._connection import NEED_DATA
from .._errors import LocalProtocolError, RemoteProtocolError
from .._events import Mail, Rcpt, Reply, Rset, StuffedContent
from .._state import State
from ..extensions import dsn as dsn_params
from . import errors
from ._actions import Flow
from ._client_options import SendResult
from ._exchange import _DATA
from .message import Outgoing

if TYPE_CHECKING:
    from .client import ClientSession

log = logging.getLogger("smtpproto")

# Events without fields, made once (they are immutable; DATA and the end
# of data are ``_exchange``'s, shared with ``send()``).
_RSET = Rset()
_NO_PARAMS: dict[str, str] = {}
# The states of a session that can carry no more messages, and those of a
# transaction that must be reset before the next MAIL (RFC 5321 §4.1.1.5).
_OVER = frozenset((State.CLOSED, State.ERROR))
_HALF_OPEN = frozenset((State.MAIL, State.RCPT))


def _content_failed() -> errors.SMTPError:
    """What the messages after one whose content failed get: the session
    was closed, since its DATA could not be ended without delivering it."""
    return errors.Disconnected("the session was closed when a message's content failed", step="message")


def _ended() -> errors.SMTPError:
    """What the messages after a 421 get when the message it struck was
    delivered all the same (its reply came before it)."""
    return errors.Disconnected("the server ended the session", step="MAIL")


@dataclass(slots=True)
class _Open:
    """A message of a batch whose DATA got its 354: its content is next."""

    #: Its place in the batch's outcomes.
    index: int
    outgoing: Outgoing
    recipients: list[str]
    accepted: list[str]
    refused: dict[str, Reply]
    smtputf8: bool
    #: Its content stuffed ahead (or why that failed), or None to stuff
    #: the chunks as they are sent.
    stuffed: StuffedContent | Exception | None = None


_new_result = object.__new__


#: A message's MAIL and RCPT events for a batch, None when it goes alone,
#: or the exception that working them out raised (its outcome).
_Events = tuple[Mail, list[Rcpt]] | None | Exception


class _Ahead:
    """The messages of a batch, each with its :data:`_Events`, taken one
    ahead when asked: :meth:`fetch` takes the next message and works out
    its events (or notes the exception its iterable raised, end included)
    and :meth:`take` hands them over, or raises that exception where
    taking the message would have raised it."""

    __slots__ = ("_session", "_iterator", "_next", "_error", "_ready")

    def __init__(self, session: ClientSession, messages: Iterable[Outgoing]) -> None:
        self._session = session
        self._iterator = iter(messages)
        self._next: tuple[Outgoing, _Events] | None = None
        self._error: BaseException | None = None
        self._ready = False

    def fetch(self) -> None:
        if self._ready:
            return
        self._ready = True
        try:
            outgoing = next(self._iterator)
        except BaseException as exc:  # noqa: BLE001 - raised again by take()
            self._error = exc
        else:
            self._next = outgoing, _events(self._session, outgoing)

    def take(self) -> tuple[Outgoing, _Events]:
        if not self._ready:
            outgoing = next(self._iterator)
            return outgoing, _events(self._session, outgoing)
        self._ready = False
        taken, error, self._next, self._error = self._next, self._error, None, None
        if error is not None:
            raise error
        assert taken is not None
        return taken


def _failed(exc: Exception, step: str) -> errors.SMTPError:
    """The outcome of a batch's message for which :meth:`ClientSession.send`
    would have raised *exc*, which is not an :class:`~errors.SMTPError`."""
    error = errors.SMTPError(f"the message was not sent: {exc!r}", step=step)
    error.__cause__ = exc
    return error


def send_batch(
    session: ClientSession, messages: Iterable[Outgoing]
) -> Flow[list[SendResult | errors.SMTPError]]:
    """The flow of :meth:`ClientSession.send_many` (whose docstring says
    what it does): that method returns this generator as its own."""
    session._debug = log.isEnabledFor(logging.DEBUG)
    outcomes: list[SendResult | errors.SMTPError | None] = []
    ended: errors.SMTPError | None = None
    current: _Open | None = None  # got its 354; its content is next
    ahead = _Ahead(session, messages)
    while True:
        try:
            outgoing, events = ahead.take()
        except StopIteration:
            break
        except BaseException:
            if current is not None:
                # Its DATA was accepted: closing is the only way out
                # that delivers nothing half-told.
                yield from session._close()
            raise
        index = len(outcomes)
        outcomes.append(None)
        if ended is None and _over(session):
            ended = errors.Disconnected("the session is over", step="MAIL")
        if ended is not None:
            outcomes[index] = ended
            continue
        if isinstance(events, Exception):
            # NotSupported (nothing was sent), or a mistake of the message.
            outcomes[index] = events if isinstance(events, errors.SMTPError) else _failed(events, "MAIL")
            continue
        if events is None:
            ended = yield from _batch_alone(session, current, outgoing, outcomes, index)
            current = None
        else:
            current, ended = yield from _batch_group(session, current, outgoing, events, outcomes, index, ahead)
    if current is not None:
        _, ended = yield from _batch_group(session, current, None, None, outcomes, -1)
    if ended is None and not _over(session):
        yield from _batch_reset(session)
    assert all(outcome is not None for outcome in outcomes)
    return outcomes  # type: ignore[return-value]


def _over(session: ClientSession) -> bool:
    """True once the session can carry no more messages."""
    return session._closed or session.conn.state in _OVER


def _events(session: ClientSession, outgoing: Outgoing) -> _Events:
    """:func:`_batch_events`, or the exception it raised."""
    try:
        return _batch_events(session, outgoing)
    except Exception as exc:  # noqa: BLE001 - the message's outcome
        return exc


def _batch_events(session: ClientSession, outgoing: Outgoing) -> tuple[Mail, list[Rcpt]] | None:
    """The MAIL and RCPT events of *outgoing* for a pipelined batch, or
    None when it must be sent on its own (see
    :meth:`ClientSession.send_many`)."""
    caps = session._offer()
    options = session.options
    recipients = outgoing.recipients
    if not recipients:
        raise ValueError("a message needs at least one recipient")
    if (
        not (options.pipelining and caps.pipelining)
        or (options.chunking and caps.chunking)
        or options.lmtp
        or (caps.rcptmax is not None and len(recipients) > caps.rcptmax)
    ):
        return None
    mail = session._mail(outgoing.sender, session._mail_parameters(outgoing, caps))
    notify = outgoing.dsn.notify
    rcpt_params = dsn_params.rcpt_parameters(notify=notify) if caps.dsn and notify else _NO_PARAMS
    return mail, [session._rcpt(r, rcpt_params) for r in recipients]


def _batch_alone(
    session: ClientSession,
    current: _Open | None,
    outgoing: Outgoing,
    outcomes: list[SendResult | errors.SMTPError | None],
    index: int,
) -> Flow[errors.SMTPError | None]:
    """Send *outgoing* with :meth:`ClientSession.send`, after the message
    whose content is next (*current*) is finished and a half-refused
    transaction reset; return the error that ended the session, if one
    did."""
    ended: errors.SMTPError | None = None
    if current is not None:
        _, ended = yield from _batch_group(session, current, None, None, outcomes, -1)
        if ended is not None:
            outcomes[index] = ended
            return ended
    try:
        yield from _batch_reset(session)
        outcomes[index] = yield from session.send(outgoing)
    except errors.SMTPError as exc:
        outcomes[index] = ended = exc
    except Exception as exc:  # noqa: BLE001 - the message's outcome
        outcomes[index] = _failed(exc, "message")
        ended = _content_failed()
    if not _over(session):
        return None
    yield from session._close()
    return ended or _ended()


def _batch_group(
    session: ClientSession,
    current: _Open | None,
    outgoing: Outgoing | None,
    events: tuple[Mail, list[Rcpt]] | None,
    outcomes: list[SendResult | errors.SMTPError | None],
    index: int,
    ahead: _Ahead | None = None,
) -> Flow[tuple[_Open | None, errors.SMTPError | None]]:
    """One write: the content of *current* (when there is one), RSET
    when the last transaction was refused half way, then MAIL, RCPT...
    and DATA of *outgoing* (when there is one); then their replies, in
    order (RFC 2920 §3.1).  Returns the message whose content is next
    and the error that ended the session, if one did.  Between the write
    and the replies the next message is taken from *ahead*.

    Written as one generator, without the helpers :meth:`ClientSession.send`
    uses but the one that queues the content (``_put_content``): it runs
    once per message, and each call saved is CPU time saved."""
    conn = session.conn
    send = conn.send
    timeouts = session.options.timeouts
    out = session._out
    # What each reply of the group answers: (timeout, step), in order.
    steps: list[tuple[float, str]] = []
    reset = current is None and events is not None and conn.state in _HALF_OPEN
    if current is not None:
        ended: errors.SMTPError | None = None
        try:
            if session._debug:
                log.debug("C: <message content>")
            yield from session._put_content(current.outgoing, current.stuffed, timeouts.data_block)
            out = session._out  # a new list if the content was written
        except errors.SMTPError as exc:  # a write failed
            outcomes[current.index] = ended = exc
        except Exception as exc:  # noqa: BLE001 - the message's outcome
            # As in send(): content cannot be taken back once its 354
            # came, and the only way out that delivers nothing is to close.
            outcomes[current.index] = _failed(exc, "message")
            ended = _content_failed()
        else:
            steps.append((timeouts.data_end, "message"))
        if ended is not None:
            if outgoing is not None:
                outcomes[index] = ended
            yield from session._close()
            return None, ended
    queued = 0  # commands of *outgoing* queued
    if events is not None:
        first = len(out)
        try:
            if reset:
                out.append(send(_RSET))
                steps.append((timeouts.command, "RSET"))
            mail, rcpts = events
            out.append(send(mail))
        except LocalProtocolError as exc:
            # The core refused the MAIL (LIMITS MAILMAX, say) before a
            # byte of it was queued; what was queued before is read.
            outcomes[index] = _failed(exc, "MAIL")
        else:
            for rcpt in rcpts:
                out.append(send(rcpt))
            out.append(send(_DATA))
            queued = len(rcpts) + 2
            steps += _transaction_steps(session, len(rcpts))
        if session._debug:
            for line in out[first:]:  # commands only: no AUTH, no content
                log.debug("C: %s", line.decode("utf-8", "replace").rstrip("\r\n"))
    replies: list[Reply] = []
    next_event = conn.next_event
    stuffed: StuffedContent | Exception | None = None
    try:
        if ahead is not None and steps:
            yield from session._flush(steps[0][0])
            # While the server reads what was just written: the next
            # message, and this one's content, ready for its 354.
            ahead.fetch()
            if queued:
                assert outgoing is not None
                stuffed = session._stuff_ahead(outgoing)
        for timeout, step in steps:
            while True:
                if session._closing is not None:
                    replies.append(session._closing)  # §3.8: it stands for the rest
                    break
                # session._next_reply(), inline for the usual case.
                try:
                    event = next_event()
                except RemoteProtocolError as exc:
                    raise errors.ProtocolFailure(f"{step}: {exc}", step=step) from None
                if type(event) is Reply and event.code != 421:
                    if session._debug:
                        log.debug("S: %s %s", event.code, " / ".join(event.text))
                    replies.append(event)
                    break
                if event is NEED_DATA:
                    yield from session._receive(timeout, step)
                else:
                    reply = session._judge(event, step)  # a 421, or the end
                    assert reply is not None
                    replies.append(reply)
                    break
    except errors.SMTPError as exc:
        # Lost, timed out or garbled: this message and every later one
        # fail, and so does the one before unless its reply came.
        if current is not None:
            outcomes[current.index] = _batch_result(session, current, replies[0]) if replies else exc
        if queued:
            outcomes[index] = exc
        yield from session._close()
        return None, exc
    if current is not None:
        outcome = outcomes[current.index] = _batch_result(session, current, replies[0])
        if replies[0] is session._closing:
            # A 421 to the final dot ended the session (§3.8): what it
            # did to this message, it does to the later ones.
            ended = outcome if isinstance(outcome, errors.SMTPError) else _ended()
            if queued:
                outcomes[index] = ended
            yield from session._close()
            return None, ended
    if not queued:
        if session._closed or conn.state in _OVER:  # a 421 to the RSET
            yield from session._close()
            return None, _ended()
        return None, None
    assert outgoing is not None
    recipients = outgoing.recipients
    mail_reply = replies[-queued]
    data_reply = replies[-1]
    rcpt_replies = replies[-queued + 1 : -1]
    error: errors.SMTPError
    for reply in rcpt_replies:
        if not 200 <= reply.code < 300:
            break
    else:
        # Every recipient accepted (the usual case): nothing to sort out.
        if 200 <= mail_reply.code < 300 and data_reply.code == 354:
            return _Open(index, outgoing, recipients, recipients, {}, "SMTPUTF8" in mail.parameters, stuffed), None
    # As session._transaction sorts them (a recipient named twice counts
    # once, by its last reply).
    answers = dict(zip([rcpt.forward_path for rcpt in rcpts], rcpt_replies))
    refused = {r: reply for r, reply in answers.items() if not 200 <= reply.code < 300}
    if not 200 <= mail_reply.code < 300:
        error = errors.SenderRefused("the sender was refused", mail_reply, step="MAIL")
    elif len(refused) == len(answers):
        error = errors.RecipientsRefused(refused)
    elif data_reply.code != 354:
        error = errors.DataRefused("DATA was refused", data_reply, step="DATA")
    else:
        accepted = [r for r in recipients if r in answers and r not in refused]
        return _Open(index, outgoing, recipients, accepted, refused, "SMTPUTF8" in mail.parameters, stuffed), None
    outcomes[index] = error
    if session._closed or conn.state in _OVER:
        yield from session._close()
        return None, error
    return None, None


def _transaction_steps(session: ClientSession, rcpts: int) -> list[tuple[float, str]]:
    """(timeout, step) of the replies to MAIL, *rcpts* RCPTs and DATA."""
    steps = session._steps.get(rcpts)
    if steps is None:
        timeouts = session.options.timeouts
        steps = [(timeouts.command, "MAIL")]
        steps += [(timeouts.command, "RCPT")] * rcpts
        steps.append((timeouts.data_start, "DATA"))
        if len(session._steps) < 16:
            session._steps[rcpts] = steps
    return steps


def _batch_result(session: ClientSession, current: _Open, final: Reply) -> SendResult | errors.SMTPError:
    """The outcome of *current* after the reply to its final dot."""
    if 200 <= final.code < 300 and not current.refused:
        # Every recipient accepted, then the message: session._result's
        # fast case, built without the frozen dataclass's field-by-field
        # __init__.
        result = _new_result(SendResult)
        result.__dict__.update(
            accepted=tuple(current.accepted),
            refused={},
            replies=dict.fromkeys(current.recipients, final),
            data_reply=final,
            pipelined=True,
            chunked=False,
            smtputf8=current.smtputf8,
        )
        return result
    result = session._result(
        current.recipients, current.accepted, dict(current.refused), [final],
        pipelined=True, chunked=False, smtputf8=current.smtputf8,
    )
    if not result.accepted:
        return errors.MessageRefused("the message was refused", final, step="message")
    return result


def _batch_reset(session: ClientSession) -> Flow[None]:
    """RSET after a transaction refused half way, so that the session
    is ready for the next message (as :meth:`ClientSession.send` leaves it)."""
    if session.conn.state in _HALF_OPEN and not session.conn.pending:
        yield from session._command(_RSET, session.options.timeouts.command, "RSET")
