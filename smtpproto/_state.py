# Theory of operation
# -------------------
# The SMTP session as data.  Both roles walk the same states, because both
# see the same conversation: a command goes one way, its reply comes back,
# and the reply's first digit decides where the session goes (§4.2.1:
# "clients act on the first digit").  So the table is
#
#     TRANSITIONS[state][command type][first digit of reply] -> new state
#
# A command type absent from a state's row is out of sequence there (the
# server answers 503; a client refuses to send it).  A reply digit absent
# from a command's entry leaves the state unchanged: a failed EHLO or MAIL
# "leaves the state as it was" (§4.1.4).  Two rules hold everywhere and are
# applied by ``next_state`` rather than repeated in every row:
#
# * a 421 reply, prompted or not, closes the session (§3.8);
# * a 3xx reply is only legal where the table names one (DATA's 354).
#
# The module knows nothing of which role "we" are, nothing of bytes, and
# nothing of extensions beyond the command types it is given.  The docs'
# state diagrams are drawn from ``TRANSITIONS`` at build time.
from __future__ import annotations

import enum
from collections.abc import Mapping

from ._esmtp_events import Auth, AuthCancel, AuthResponse, Bdat, Lhlo, StartTLS, Xclient
from ._events import (
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    Mail,
    Noop,
    Rcpt,
    Reply,
    Rset,
    Quit,
    Vrfy,
)

__all__ = [
    "State",
    "TRANSITIONS",
    "BdatLast",
    "Key",
    "key_of",
    "next_state",
    "is_allowed",
    "expected_digit",
]


class State(enum.Enum):
    """The states of an SMTP session, shared by both roles."""

    #: Connected; the server's greeting has not been sent/received yet.
    CONNECTED = "CONNECTED"
    #: A 220 greeting was given; EHLO or HELO is awaited (§3.1).
    GREETED = "GREETED"
    #: A 554 greeting was given: everything but QUIT gets 503 (§3.1).
    REFUSED = "REFUSED"
    #: EHLO/HELO succeeded; no mail transaction is open.
    READY = "READY"
    #: MAIL was accepted; no recipient has been accepted yet.
    MAIL = "MAIL"
    #: At least one RCPT was accepted; DATA may follow.
    RCPT = "RCPT"
    #: DATA got 354: message content flows until the end of data.
    DATA = "DATA"
    #: A BDAT chunk was accepted: more chunks may follow, DATA may not.
    BDAT = "BDAT"
    #: A BDAT chunk was refused: only RSET (or EHLO, QUIT...) may follow.
    BDAT_FAILED = "BDAT_FAILED"
    #: A SASL exchange is under way: the client owes a response line.
    AUTH = "AUTH"
    #: STARTTLS got 220: the transport must switch to TLS before anything.
    TLS = "TLS"
    #: The session is over (221 after QUIT, 421, or the peer closed).
    CLOSED = "CLOSED"
    #: A protocol error ended the session; close the transport.
    ERROR = "ERROR"

    # Enum's own __hash__ is Python code (hash of the member's name), run on
    # every TRANSITIONS lookup.  Members are singletons compared by identity
    # (Enum defines no __eq__), so the identity hash of object agrees with
    # equality and is computed in C.
    __hash__ = object.__hash__


class BdatLast:
    """Table key for ``BDAT n LAST``: its reply ends the message, like the
    end of DATA, so it moves the session differently from other BDATs."""


Key = type[Event] | type[BdatLast]
Row = Mapping[Key, Mapping[int, State]]


def key_of(event: Event) -> Key:
    """The table key of *event* (``BdatLast`` for ``BDAT n LAST``)."""
    if isinstance(event, Bdat) and event.last:
        return BdatLast
    return type(event)


# NOOP, HELP, EXPN, VRFY and RSET "can be used at any time during a session,
# or without previously initializing a session" (§4.1.4).  QUIT too (§4.1.1.10).
_STAY: Mapping[int, State] = {}


def _anytime(reset_to: State) -> Row:
    return {
        Noop: _STAY,
        Help: _STAY,
        Vrfy: _STAY,
        Expn: _STAY,
        Rset: {2: reset_to},
        Quit: {2: State.CLOSED},
    }


# "A session that will contain mail transactions MUST first be initialized
# by the use of the EHLO command" (§4.1.4); a second EHLO (or HELO) resets
# any transaction in progress and returns to READY (§4.1.4).
# LHLO is LMTP's EHLO (RFC 2033 §4.1); which of the three a server accepts
# is its configuration's business, not the table's.
_HELLO: Row = {Ehlo: {2: State.READY}, Helo: {2: State.READY}, Lhlo: {2: State.READY}}
# XCLIENT (Postfix) replaces the client's identity outside a transaction;
# its 220 reply starts the session over from GREETED.
_XCLIENT: Row = {Xclient: {2: State.GREETED}}
# RFC 3030 §2: a BDAT chunk is answered when its octets have arrived.  A
# refused chunk fails the transaction ("the transaction should be
# considered failed and the sender-SMTP MUST NOT send any additional BDAT
# segments"); BDAT LAST ends it whatever the reply, like the end of DATA.
_CHUNKS: Row = {
    Bdat: {2: State.BDAT, 4: State.BDAT_FAILED, 5: State.BDAT_FAILED},
    BdatLast: {2: State.READY, 4: State.READY, 5: State.READY},
}
_ENDS_EXCHANGE = {2: State.READY, 4: State.READY, 5: State.READY}

TRANSITIONS: Mapping[State, Row] = {
    # The greeting is a reply that answers no command (§3.1): 220 opens the
    # session, 554 refuses it (only QUIT then), 421 (or any 4xx, which no
    # client can act on) closes it.
    State.CONNECTED: {Reply: {2: State.GREETED, 4: State.CLOSED, 5: State.REFUSED}},
    State.GREETED: {**_HELLO, **_XCLIENT, **_anytime(State.GREETED)},
    # §3.1: after a 554 greeting the server "MUST wait for the client to send
    # a QUIT command before closing the connection and SHOULD respond to any
    # intervening commands with 503 bad sequence of commands".
    State.REFUSED: {Quit: {2: State.CLOSED}},
    # RFC 3207 §4: STARTTLS, then 220 and the TLS handshake.  RFC 4954 §4:
    # AUTH outside a transaction; 334 continues the exchange, 235 ends it.
    State.READY: {
        **_HELLO,
        **_XCLIENT,
        Mail: {2: State.MAIL},
        StartTLS: {2: State.TLS},
        Auth: {2: State.READY, 3: State.AUTH},
        **_anytime(State.READY),
    },
    State.MAIL: {**_HELLO, Rcpt: {2: State.RCPT}, **_anytime(State.READY)},
    # §4.1.1.4: DATA after at least one accepted RCPT; 354 starts the data.
    State.RCPT: {
        **_HELLO,
        Rcpt: {2: State.RCPT},
        Data: {3: State.DATA},
        **_CHUNKS,
        **_anytime(State.READY),
    },
    State.BDAT: {**_HELLO, **_CHUNKS, **_anytime(State.READY)},
    State.BDAT_FAILED: {**_HELLO, **_anytime(State.READY)},
    # RFC 4954 §4: each 334 is answered by one line; "*" cancels (501).
    State.AUTH: {AuthResponse: {**_ENDS_EXCHANGE, 3: State.AUTH}, AuthCancel: _ENDS_EXCHANGE},
    # Nothing is a command while the transport switches (attack class 3).
    State.TLS: {},
    # §4.1.1.4: after the end of data the transaction is over whatever the
    # reply: "the receiver MUST ... clear" the buffers on success and failure.
    State.DATA: {EndOfMessage: _ENDS_EXCHANGE},
    State.CLOSED: {},
    State.ERROR: {},
}


def is_allowed(state: State, command: Key) -> bool:
    """True when *command* may be issued in *state*."""
    return command in TRANSITIONS[state]


def expected_digit(command: Key) -> int:
    """The first digit of a successful reply to *command* (3 for DATA)."""
    return 3 if command is Data else 2


def next_state(state: State, command: Key, code: int) -> State:
    """The state after *command*, issued in *state*, got reply *code*.

    Raises ``KeyError`` when *command* is not allowed in *state* and
    ``ValueError`` when a 3xx answers a command that takes none.
    """
    if code == 421:
        # §3.8: "421 Service not available, closing transmission channel",
        # which may be sent in answer to any command or unprompted.
        return State.CLOSED
    outcomes = TRANSITIONS[state][command]
    digit = code // 100
    if digit == 3 and 3 not in outcomes:
        raise ValueError(f"a {code} reply cannot answer {command.__name__}")
    return outcomes.get(digit, state)
