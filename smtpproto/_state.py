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

__all__ = ["State", "TRANSITIONS", "next_state", "is_allowed", "expected_digit"]


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
    #: The session is over (221 after QUIT, 421, or the peer closed).
    CLOSED = "CLOSED"
    #: A protocol error ended the session; close the transport.
    ERROR = "ERROR"


Row = Mapping[type[Event], Mapping[int, State]]

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
_HELLO: Row = {Ehlo: {2: State.READY}, Helo: {2: State.READY}}

TRANSITIONS: Mapping[State, Row] = {
    # The greeting is a reply that answers no command (§3.1): 220 opens the
    # session, 554 refuses it (only QUIT then), 421 (or any 4xx, which no
    # client can act on) closes it.
    State.CONNECTED: {Reply: {2: State.GREETED, 4: State.CLOSED, 5: State.REFUSED}},
    State.GREETED: {**_HELLO, **_anytime(State.GREETED)},
    # §3.1: after a 554 greeting the server "MUST wait for the client to send
    # a QUIT command before closing the connection and SHOULD respond to any
    # intervening commands with 503 bad sequence of commands".
    State.REFUSED: {Quit: {2: State.CLOSED}},
    State.READY: {**_HELLO, Mail: {2: State.MAIL}, **_anytime(State.READY)},
    State.MAIL: {**_HELLO, Rcpt: {2: State.RCPT}, **_anytime(State.READY)},
    # §4.1.1.4: DATA after at least one accepted RCPT; 354 starts the data.
    State.RCPT: {
        **_HELLO,
        Rcpt: {2: State.RCPT},
        Data: {3: State.DATA},
        **_anytime(State.READY),
    },
    # §4.1.1.4: after the end of data the transaction is over whatever the
    # reply: "the receiver MUST ... clear" the buffers on success and failure.
    State.DATA: {
        EndOfMessage: {2: State.READY, 4: State.READY, 5: State.READY},
    },
    State.CLOSED: {},
    State.ERROR: {},
}


def is_allowed(state: State, command: type[Event]) -> bool:
    """True when *command* may be issued in *state*."""
    return command in TRANSITIONS[state]


def expected_digit(command: type[Event]) -> int:
    """The first digit of a successful reply to *command* (3 for DATA)."""
    return 3 if command is Data else 2


def next_state(state: State, command: type[Event], code: int) -> State:
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
