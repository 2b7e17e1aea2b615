# Theory of operation
# -------------------
# ``ClientSession`` is the client's conversation, written once as
# generator flows (see ``_actions``) over a ``ClientConnection``:
#
#   open()          greeting, EHLO (HELO when EHLO gets 500/502; LHLO for
#                   LMTP), STARTTLS by policy (then EHLO again), AUTH with
#                   the strongest mechanism both sides support;
#   send(outgoing)  one mail transaction: MAIL, RCPT..., then DATA or BDAT,
#                   pipelined when the server offers PIPELINING, with the
#                   MAIL parameters chosen from the message (SIZE, BODY,
#                   SMTPUTF8, DSN, REQUIRETLS); returns a SendResult with
#                   each recipient's reply;
#   send_many(...)  a batch of messages, pipelined across messages: each
#                   write carries one message's content and final dot and
#                   the next one's MAIL, RCPT... DATA (RFC 2920 §3.1), and
#                   the result is one outcome per message (a SendResult or
#                   the error send() would have raised for it);
#   quit()          QUIT and close.
#
# This module is the conversation: opening, one transaction (or one per
# group of recipients), closing, and the policy they follow.  The session
# inherits its plumbing from ``_exchange`` (the write queue, reading and
# judging replies, the events and the server's offer kept per session);
# send_many() is ``_batch``; the options and the result are
# ``_client_options``' (exported here).
#
# Policy lives here, protocol rules in the core: the core refuses what the
# RFCs forbid, and this layer decides what to do about the server's
# answers.  It never downgrades: TLS required but refused ends the session
# before AUTH or MAIL (attack class 8), and a message that needs 8BITMIME
# or SMTPUTF8 is not sent to a server without them.  Timeouts are those of
# RFC 5321 §4.5.3.2, per step, handed to the adapter with each Receive.
# Commands are gathered and written in one Send before each read, so a
# pipelined batch is one write, and the content goes out with its final dot
# in one more: two round trips per message with send() (the content must
# wait for the 354, RFC 2920 §3.1), one with send_many(), whose writes put
# the next message's commands behind the dot.  What does not change from
# one message to the next is worked out once per session (see
# ``_exchange``), so a message costs the core's work and little else.  The
# protocol trace goes to the logger ``smtpproto`` at DEBUG, with SASL data
# and message content left out.
# A failure that leaves the session unusable closes the connection before
# it is raised: any failure of open(); in send() a lost connection, a
# timeout, a protocol failure, or anything that stops the content half
# way (the only way out that delivers nothing).  Refusals leave the session
# ready for the next message.  A 421 (§3.8) stands for every reply still due.
#
# What was negotiated is recorded as it happened, not as configured: how
# the connection came to be encrypted (``ClientSession.tls_method``), the
# SASL mechanism that got its 235 (``ClientSession.auth_mechanism``), and
# per transaction whether MAIL and RCPT went out as one pipelined batch,
# whether the content went by BDAT, and whether MAIL carried SMTPUTF8
# (``SendResult.pipelined``, ``.chunked``, ``.smtputf8``).
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Literal

from .. import sasl
from .._client import ClientConfig, ClientConnection
from .._errors import LocalProtocolError
from .._state import State
from .._esmtp_events import Auth, AuthCancel, AuthResponse, Bdat, EndOfChunk, Lhlo, StartTLS as StartTLSCommand
from .._events import Ehlo, Helo, Mail, MessageData, Quit, Rcpt, Reply, Rset, StuffedContent
from ..extensions import dsn as dsn_params
from . import errors
from ._actions import Close, Flow, Receive, StartTLS
from ._batch import send_batch
from ._client_options import ClientOptions, SendResult, Timeouts, TLSMode
from ._exchange import _DATA, _END_OF_MESSAGE, _Exchange, _Offer
from .message import Outgoing

__all__ = ["TLSMode", "Timeouts", "ClientOptions", "SendResult", "ClientSession"]

log = logging.getLogger("smtpproto")


# Chunks of a BDAT transfer sent before the replies are read (RFC 3030
# allows pipelining BDAT; the window keeps the server's replies flowing).
_BDAT_WINDOW = 16


class ClientSession(_Exchange):
    """The client side of one SMTP (or LMTP) connection, as flows.

    Each method returns a generator flow that an adapter runs; see
    :mod:`smtpproto.flows`.  Methods must be run one after the other.
    """

    def __init__(self, options: ClientOptions | None = None) -> None:
        self.options = options if options is not None else ClientOptions()
        config = self.options.config or ClientConfig(lmtp=self.options.lmtp)
        if config.lmtp != self.options.lmtp:
            raise ValueError("ClientOptions.lmtp and its ClientConfig.lmtp disagree")
        if self.options.allow_plaintext_auth and not config.allow_plaintext_auth:
            # The option is the policy; the core only enforces what it is told.
            config = replace(config, allow_plaintext_auth=True)
        #: The protocol core.
        self.conn = ClientConnection(config, tls=self.options.tls is TLSMode.IMPLICIT)
        # What is queued for the next write, and its length.
        self._out: list[bytes] = []
        self._out_size = 0
        self._offer_cache: _Offer | None = None
        # Events already validated, reused for the next messages: RCPT
        # events by (forward-path, parameters), and reverse-paths that a
        # MAIL event accepted (see _mail).
        self._rcpts: dict[tuple[str, tuple[tuple[str, str], ...]], Rcpt] = {}
        self._senders: set[str] = set()
        self._last_mail: Mail | None = None
        # Receive actions by timeout (immutable, so made once each).
        self._receives: dict[float, Receive] = {}
        # A batch's reply steps for a transaction, by its number of RCPTs.
        self._steps: dict[int, list[tuple[float, str]]] = {}
        #: The greeting, once read.
        self.greeting: Reply | None = None
        #: The reply to the last EHLO/HELO/LHLO.
        self.hello_reply: Reply | None = None
        self._closed = False
        # The 421 with which the server ended the session, if it did.
        self._closing: Reply | None = None
        self._tls_method: Literal["implicit", "STARTTLS"] | None = None
        # Whether the protocol trace is on, read once per batch of messages
        # rather than once per command and reply.
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._auth_mechanism: str | None = None

    # -- what was negotiated -----------------------------------------------

    @property
    def tls_method(self) -> Literal["implicit", "STARTTLS"] | None:
        """How the connection came to be encrypted: ``"implicit"`` (TLS
        from the first byte, RFC 8314 §3; set once the greeting arrived
        over it), ``"STARTTLS"`` (upgraded after a 220 to STARTTLS, RFC
        3207 §4), or None while it is cleartext.  It stays set after the
        session ends."""
        return self._tls_method

    @property
    def auth_mechanism(self) -> str | None:
        """The SASL mechanism (upper case, e.g. ``"CRAM-MD5"``) of the AUTH
        exchange the server ended with 235 (RFC 4954 §4), or None when the
        session did not authenticate.  It stays set after the session
        ends."""
        return self._auth_mechanism

    # -- opening -----------------------------------------------------------

    def open(self) -> Flow[Reply]:
        """Greeting, hello, STARTTLS and AUTH; returns the last hello reply.

        When a step fails the session is ended (QUIT after a refusal) and
        the connection closed before the error is raised.
        """
        self._debug = log.isEnabledFor(logging.DEBUG)
        try:
            return (yield from self._open())
        except Exception as exc:
            if isinstance(exc, (errors.SMTPReplyError, errors.AuthFailed)):
                yield from self._quit_quietly()
            else:
                yield from self._close()
            raise

    def _open(self) -> Flow[Reply]:
        timeouts = self.options.timeouts
        greeting = yield from self._reply(timeouts.greeting, "greeting")
        self.greeting = greeting
        if self.conn.tls:
            # The adapter made the TLS connection before the first byte
            # (RFC 8314 §3), and the greeting came over it.
            self._tls_method = "implicit"
        if greeting.code != 220:
            if greeting.code == 554:
                yield from self._quit_quietly()
            raise errors.GreetingRefused("the server refused the session", greeting, step="greeting")
        reply = yield from self._hello()
        mode = self.options.tls
        if mode in (TLSMode.OPPORTUNISTIC, TLSMode.REQUIRED) and not self.conn.tls:
            reply = yield from self._starttls(reply, required=mode is TLSMode.REQUIRED)
        if self.options.username is not None:
            yield from self._authenticate()
        return reply

    def _hello(self) -> Flow[Reply]:
        timeout = self.options.timeouts.command
        name = self.options.helo_name
        if self.options.lmtp:
            reply = yield from self._command(Lhlo(domain=name), timeout, "LHLO")
        else:
            reply = yield from self._command(Ehlo(domain=name), timeout, "EHLO")
            if reply.code in (500, 502):
                # RFC 5321 §3.2: fall back to HELO when EHLO is not known.
                reply = yield from self._command(Helo(domain=name), timeout, "HELO")
        if not reply.is_success:
            raise errors.HelloRefused("the server refused the hello", reply, step="EHLO")
        self.hello_reply = reply
        return reply

    def _starttls(self, hello: Reply, required: bool) -> Flow[Reply]:
        if not self.conn.capabilities.starttls:
            if required:
                yield from self._quit_quietly()
                raise errors.TLSRequired("TLS is required but the server does not offer STARTTLS")
            return hello
        reply = yield from self._command(StartTLSCommand(), self.options.timeouts.command, "STARTTLS")
        if reply.code != 220:
            if required:
                yield from self._quit_quietly()
                raise errors.TLSRequired("the server refused STARTTLS", reply)
            return hello
        try:
            yield StartTLS(self.options.server_hostname)
        except OSError as exc:  # ssl.SSLError is an OSError: never fall back to cleartext
            raise errors.ProtocolFailure(f"TLS handshake failed: {exc}", step="STARTTLS") from None
        # No byte after the 220 can be waiting here: _reply refused any that
        # came with it (attack class 3), and nothing was read since.
        self.conn.tls_established()
        self._tls_method = "STARTTLS"
        return (yield from self._hello())

    def _authenticate(self) -> Flow[None]:
        options = self.options
        offered = self.conn.capabilities.auth_mechanisms
        if options.mechanism is not None:
            offered = tuple(m for m in offered if m == options.mechanism.upper())
        assert options.username is not None
        allow_plaintext = self.conn.tls or options.allow_plaintext_auth
        mechanism = sasl.choose_client_mechanism(
            offered,
            username=options.username,
            password=options.password,
            token=options.token,
            allow_plaintext=allow_plaintext,
            host=options.server_hostname or "",
        )
        if mechanism is None:
            # Cleartext rules out PLAIN and friends unless allowed (attack
            # class 8); otherwise every offered mechanism refused the
            # credentials (a NUL in a PLAIN user name, RFC 4616 §2).  Name
            # the encryption only when it was the reason.
            why = "" if allow_plaintext else ", and the connection is not encrypted"
            raise errors.AuthFailed(
                "no usable AUTH mechanism for these credentials (offered: "
                f"{' '.join(self.conn.capabilities.auth_mechanisms) or 'none'}{why})"
            )
        timeout = options.timeouts.command
        reply = yield from self._command(
            Auth(mechanism=mechanism.name, initial_response=mechanism.initial_response()),
            timeout,
            "AUTH",
        )
        while reply.code == 334:
            try:
                answer = mechanism.respond(self.conn.challenge or b"")
            except sasl.SASLError as exc:
                self._queue(AuthCancel())
                yield from self._reply(timeout, "AUTH")
                raise errors.AuthFailed(f"the server's SASL challenge was refused: {exc}") from None
            self._queue(AuthResponse(data=answer))
            reply = yield from self._reply(timeout, "AUTH")
        if reply.code != 235:
            raise errors.AuthFailed("authentication failed", reply)
        if not mechanism.complete:
            # SCRAM: a 235 before the server proved it knows the password.
            raise errors.AuthFailed("the server reported success without completing the exchange")
        self._auth_mechanism = mechanism.name

    # -- sending -----------------------------------------------------------

    def _mail_parameters(self, outgoing: Outgoing, caps: _Offer) -> dict[str, str | None]:
        params: dict[str, str | None] = {}
        if caps.size and outgoing.size is not None:
            params["SIZE"] = str(outgoing.size)
        if outgoing.eight_bit:
            if self.options.chunking and caps.chunking and caps.binarymime:
                params["BODY"] = "BINARYMIME"
            elif caps.eightbitmime:
                params["BODY"] = "8BITMIME"
            else:
                raise errors.NotSupported(
                    "the message has 8-bit content and the server does not offer 8BITMIME",
                    step="MAIL",
                )
        if outgoing.smtputf8:
            if not caps.smtputf8:
                raise errors.NotSupported(
                    "the message needs SMTPUTF8, which the server does not offer", step="MAIL"
                )
            params["SMTPUTF8"] = None
        if outgoing.requiretls:
            if not caps.requiretls:
                raise errors.NotSupported("REQUIRETLS is not offered", step="MAIL")
            params["REQUIRETLS"] = None
        dsn = outgoing.dsn
        if caps.dsn and (dsn.ret is not None or dsn.envid is not None):
            params.update(dsn_params.mail_parameters(ret=dsn.ret, envid=dsn.envid))
        return params

    def send(self, outgoing: Outgoing) -> Flow[SendResult]:
        """One mail transaction per group of recipients the server's LIMITS
        allow (RFC 9422); returns the combined result.

        A refusal (:class:`~errors.SMTPReplyError`, :class:`~errors.NotSupported`)
        leaves the session ready for the next message.  After a failure that
        leaves it unusable (a lost connection, a timeout, a protocol failure,
        or an exception while the content was being sent, which cannot be
        ended without delivering a truncated message) the connection is
        closed before the error is raised.
        """
        self._debug = log.isEnabledFor(logging.DEBUG)
        try:
            recipients = outgoing.recipients
            if not recipients:
                raise ValueError("a message needs at least one recipient")
            if self._closed or self.conn.state in (State.CLOSED, State.ERROR):
                raise errors.Disconnected("the session is over", step="MAIL")
            limit = self._offer().rcptmax or len(recipients)
            if len(recipients) > limit:
                return (yield from self._send_groups(outgoing, limit))
            result = yield from self._transaction(outgoing, recipients)
            if not result.accepted:
                assert result.data_reply is not None
                raise errors.MessageRefused("the message was refused", result.data_reply, step="message")
            return result
        except (errors.Disconnected, errors.Timeout, errors.ProtocolFailure):
            yield from self._close()
            raise

    def _send_groups(self, outgoing: Outgoing, limit: int) -> Flow[SendResult]:
        # One transaction per group.  A refusal of one group does not undo
        # the delivery to the groups before it, so it is recorded in the
        # result, and raised only when no recipient got the message.
        outgoing.chunks = list(outgoing.chunks)  # sent more than once: must be replayable
        accepted: list[str] = []
        refused: dict[str, Reply] = {}
        replies: dict[str, Reply] = {}
        data_reply: Reply | None = None
        negotiated: SendResult | None = None  # a group's result: what its transaction did
        failures: list[errors.SMTPError] = []
        for start in range(0, len(outgoing.recipients), limit):
            group = outgoing.recipients[start : start + limit]
            if self._closing is not None:
                # A 421 ended the session: it stands for the groups not tried.
                group_refused = dict.fromkeys(group, self._closing)
            else:
                try:
                    result = yield from self._transaction(outgoing, group)
                except (errors.SMTPReplyError, errors.RecipientsRefused) as exc:
                    failures.append(exc)
                    group_refused = _refusals(exc, group)
                else:
                    if not result.accepted:
                        assert result.data_reply is not None
                        failures.append(
                            errors.MessageRefused("the message was refused", result.data_reply, step="message")
                        )
                    accepted += result.accepted
                    data_reply = result.data_reply or data_reply
                    negotiated = result
                    refused.update(result.refused)
                    replies.update(result.replies)
                    continue
            refused.update(group_refused)
            replies.update(group_refused)
        if not accepted:
            if all(isinstance(exc, errors.RecipientsRefused) for exc in failures):
                raise errors.RecipientsRefused(refused)
            raise next(exc for exc in failures if not isinstance(exc, errors.RecipientsRefused))
        assert negotiated is not None  # some group delivered
        return SendResult(
            accepted=tuple(accepted),
            refused=refused,
            replies={r: replies[r] for r in outgoing.recipients if r in replies},
            data_reply=data_reply,
            # Every group ran under the same EHLO reply and options.
            pipelined=negotiated.pipelined,
            chunked=negotiated.chunked,
            smtputf8=negotiated.smtputf8,
        )

    def _transaction(self, outgoing: Outgoing, recipients: list[str]) -> Flow[SendResult]:
        timeouts = self.options.timeouts
        caps = self._offer()
        mail = self._mail(outgoing.sender, self._mail_parameters(outgoing, caps))
        notify = outgoing.dsn.notify
        rcpt_params = dsn_params.rcpt_parameters(notify=notify) if caps.dsn and notify else {}
        rcpts = [self._rcpt(r, rcpt_params) for r in recipients]
        bdat = self.options.chunking and caps.chunking
        pipelining = self.options.pipelining and caps.pipelining
        replies: dict[str, Reply] = {}
        data_reply = None
        stuffed: StuffedContent | Exception | None = None
        if pipelining:
            # RFC 2920 §3.1: MAIL and RCPT anywhere in a batch, DATA last;
            # the batch goes out in one write when the first reply is read.
            self._queue(mail)
            for rcpt in rcpts:
                self._queue(rcpt)
            steps = [(timeouts.command, "MAIL")] + [(timeouts.command, "RCPT")] * len(rcpts)
            if not bdat:
                self._queue(_DATA)
                steps.append((timeouts.data_start, "DATA"))
                # The content is stuffed while the replies are on the way.
                yield from self._flush(timeouts.command)
                stuffed = self._stuff_ahead(outgoing)
            answers = yield from self._answers(steps)
            mail_reply = answers[0]
            for rcpt, reply in zip(rcpts, answers[1:]):
                replies[rcpt.forward_path] = reply
            if not bdat:
                data_reply = answers[-1]
        else:
            mail_reply = yield from self._command(mail, timeouts.command, "MAIL")
            if mail_reply.is_success:
                for rcpt in rcpts:
                    replies[rcpt.forward_path] = yield from self._answer(rcpt, timeouts.command, "RCPT")
        refused = {r: reply for r, reply in replies.items() if not reply.is_success}
        accepted = [r for r in recipients if r in replies and r not in refused]
        if not mail_reply.is_success:
            yield from self._reset_if_needed()
            raise errors.SenderRefused("the sender was refused", mail_reply, step="MAIL")
        if not accepted:
            yield from self._reset_if_needed()
            raise errors.RecipientsRefused(refused)
        if not bdat:
            if data_reply is None:
                data_reply = yield from self._answer(_DATA, timeouts.data_start, "DATA")
            if data_reply.code != 354:
                yield from self._reset_if_needed()
                raise errors.DataRefused("DATA was refused", data_reply, step="DATA")
        try:
            if bdat:
                finals = yield from self._send_bdat(outgoing, pipelining)
            else:
                finals = yield from self._send_data(outgoing, stuffed)
        except errors.SMTPReplyError:
            raise  # a refused BDAT chunk: the transaction was reset
        except Exception:
            # Content cannot be taken back: whatever stopped it (the
            # caller's chunks, the core refusing one, the connection), the
            # only way out that delivers nothing is to close.
            yield from self._close()
            raise
        return self._result(
            recipients, accepted, refused, finals,
            pipelined=pipelining, chunked=bdat, smtputf8="SMTPUTF8" in mail.parameters,
        )

    def _send_data(self, outgoing: Outgoing, stuffed: StuffedContent | Exception | None) -> Flow[list[Reply]]:
        """The content (stuffed ahead already, or why that failed, or None
        to stuff it chunk by chunk) and its final dot; their replies."""
        log.debug("C: <message content>")
        # The content and its final dot go out in one write with nothing
        # after them: the reply to the dot is awaited (RFC 2920 §3.1 allows
        # the content to start a batch; no next command is known yet).
        yield from self._put_content(outgoing, stuffed, self.options.timeouts.data_block)
        log.debug("C: .")
        return (yield from self._final_replies())

    def _send_bdat(self, outgoing: Outgoing, pipelining: bool) -> Flow[list[Reply]]:
        timeouts = self.options.timeouts
        # Without PIPELINING each chunk waits for its reply (RFC 3030 §4.2).
        window = _BDAT_WINDOW if pipelining else 1
        chunks: Iterator[bytes] = iter(outgoing.chunks)
        current = next(chunks, b"")
        outstanding = 0
        while True:
            following = next(chunks, None)
            last = following is None
            self._queue(Bdat(size=len(current), last=last))
            if current:
                self._put(self.conn.send(MessageData(data=current)))
            self._put(self.conn.send(_END_OF_MESSAGE if last else EndOfChunk()))
            if following is None:
                break
            outstanding += 1
            if outstanding >= window:
                for _ in range(outstanding):
                    reply = yield from self._reply(timeouts.data_block, "BDAT")
                    if not reply.is_success:
                        yield from self._reset_if_needed()  # reads the rest of the pipeline
                        raise errors.DataRefused("a BDAT chunk was refused", reply, step="BDAT")
                outstanding = 0
            yield from self._flush(timeouts.data_block)
            current = following
        for _ in range(outstanding):
            reply = yield from self._reply(timeouts.data_block, "BDAT")
            if not reply.is_success:
                yield from self._reset_if_needed()  # reads the rest of the pipeline
                raise errors.DataRefused("a BDAT chunk was refused", reply, step="BDAT")
        return (yield from self._final_replies())

    def _final_replies(self) -> Flow[list[Reply]]:
        count = max(1, len(self.conn.accepted_recipients)) if self.options.lmtp else 1
        finals = []
        for _ in range(count):
            reply = yield from self._reply(self.options.timeouts.data_end, "message")
            finals.append(reply)
            if reply.code == 421:
                break  # §3.8: the server is closing; no more replies come
        return finals + [finals[-1]] * (count - len(finals))

    def _result(
        self,
        recipients: list[str],
        accepted: list[str],
        refused: dict[str, Reply],
        finals: list[Reply],
        *,
        pipelined: bool,
        chunked: bool,
        smtputf8: bool,
    ) -> SendResult:
        final = finals[-1]
        if not self.options.lmtp and final.is_success and len(accepted) == len(recipients):
            # Every recipient accepted, then the message: one reply for all.
            return SendResult(
                accepted=tuple(accepted),
                refused=refused,
                replies=dict.fromkeys(recipients, final),
                data_reply=final,
                pipelined=pipelined,
                chunked=chunked,
                smtputf8=smtputf8,
            )
        replies = dict(refused)
        if self.options.lmtp:
            per_recipient = dict(zip(accepted, finals))
        else:
            per_recipient = {r: finals[-1] for r in accepted}
        replies.update(per_recipient)
        delivered = tuple(r for r in accepted if per_recipient[r].is_success)
        refused.update({r: reply for r, reply in per_recipient.items() if not reply.is_success})
        return SendResult(
            accepted=delivered,
            refused=refused,
            replies={r: replies[r] for r in recipients if r in replies},
            data_reply=finals[-1],
            pipelined=pipelined,
            chunked=chunked,
            smtputf8=smtputf8,
        )

    def _drain_pending(self) -> Flow[None]:
        while self.conn.pending and self._closing is None:
            yield from self._reply(self.options.timeouts.command, "pipeline")

    def _reset_if_needed(self) -> Flow[None]:
        yield from self._drain_pending()
        if self.conn.state in (State.MAIL, State.RCPT, State.BDAT, State.BDAT_FAILED):
            yield from self._command(Rset(), self.options.timeouts.command, "RSET")

    # -- a batch of messages ---------------------------------------------------

    def send_many(self, messages: Iterable[Outgoing]) -> Flow[list[SendResult | errors.SMTPError]]:
        """Send *messages* over this session, pipelining across them; return
        one outcome per message, in order: its :class:`SendResult`, or the
        :class:`~errors.SMTPError` that :meth:`send` would have raised for it
        alone (:class:`~errors.SenderRefused`,
        :class:`~errors.RecipientsRefused`, :class:`~errors.DataRefused`,
        :class:`~errors.MessageRefused`, :class:`~errors.NotSupported`...).

        With PIPELINING and DATA, each write after the first carries the
        content and final dot of one message, then (after a RSET when the
        message before was refused half way) the MAIL, RCPTs and DATA of the
        next, before the reply to the dot is read.  RFC 2920 §3.1 allows
        it: the content may start a group, DATA must end one.  So a message
        costs one round trip, not two.  While the server works on a write,
        the next message is taken from *messages* and the content of the
        message whose DATA ended the write is stuffed (when it is bytes of
        at most 64 KiB; a stream of chunks is read only after its 354), so
        neither costs time of its own.  A message that cannot be pipelined
        so (no PIPELINING, ``ClientOptions(pipelining=False)``, BDAT, LMTP,
        or more recipients than the server's LIMITS RCPTMAX) goes by
        :meth:`send`, on its own, after the replies the batch still awaits.

        A failure that ends the session (:class:`~errors.Disconnected`,
        :class:`~errors.Timeout`, :class:`~errors.ProtocolFailure`, or a
        421 reply, RFC 5321 §3.8) is the outcome of the message it struck
        and, the same object, of every later message; a message whose reply
        to the final dot never came is never reported delivered.  The
        connection is then closed.  Refusals leave the session ready for
        the next message, as in :meth:`send`.

        Where :meth:`send` would raise an exception that is not an
        :class:`~errors.SMTPError` (a message without recipients, chunks
        that raise, content the core refuses with
        :exc:`~smtpproto.LocalProtocolError`, a MAIL over the server's
        LIMITS MAILMAX), the message's outcome is an
        :class:`~errors.SMTPError` with that exception as its
        ``__cause__``, so the outcomes of the other messages are not lost.
        Content that fails half way cannot be taken back (its 354 was
        given): the connection is closed, as :meth:`send` does, and the
        later messages fail with :class:`~errors.Disconnected`.  An
        exception raised by *messages* itself propagates (the connection
        is closed first when a message's DATA was accepted and its content
        not yet sent).
        """
        # Not a generator itself: the batch's generator is the flow the
        # adapter runs, with no layer between it and each action.
        return send_batch(self, messages)

    # -- closing -------------------------------------------------------------

    def quit(self) -> Flow[None]:
        """QUIT (waiting briefly for the 221) and close the connection."""
        self._debug = log.isEnabledFor(logging.DEBUG)
        yield from self._quit_quietly()

    def _quit_quietly(self) -> Flow[None]:
        if not self._closed and self.conn.state not in (State.CLOSED, State.ERROR):
            try:
                yield from self._command(Quit(), min(self.options.timeouts.command, 5.0), "QUIT")
            except errors.SMTPError:
                pass  # the server may hang up without its 221; nothing is lost
            except LocalProtocolError:
                pass  # QUIT cannot be sent now (mid-DATA, say): closing ends the session
        yield from self._close()

    def _close(self) -> Flow[None]:
        if not self._closed:
            self._closed = True
            yield Close()


def _refusals(exc: errors.SMTPError, group: list[str]) -> dict[str, Reply]:
    """Each recipient of *group* -> the reply that refused it in *exc*."""
    if isinstance(exc, errors.RecipientsRefused):
        return exc.replies
    assert isinstance(exc, errors.SMTPReplyError)
    return dict.fromkeys(group, exc.reply)

