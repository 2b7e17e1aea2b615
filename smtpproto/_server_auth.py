# Theory of operation
# -------------------
# The server's half of AUTH (RFC 4954 §4), between the connection and the
# SASL mechanisms of ``smtpproto.sasl``.
#
# Every AUTH command gets a fresh mechanism object (a mechanism serves one
# attempt).  The connection feeds it the client's initial response and each
# response line, already base64-decoded; the mechanism answers with a step.
# A step that needs the application's credential store (``CheckPassword``,
# ``LookupScram``...) is exposed as ``request``; the application answers
# through ``reply(answer)``, which also turns any other step into the
# reply to send: 334 with the base64 challenge, 235 2.7.0 on success, the
# mechanism's failure code otherwise.  The answer is an argument, not a
# callback, so an asynchronous application may look it up however it
# likes between ``next_event()`` and ``send()``.
#
# Failures are counted per session, a cancelled attempt and a malformed
# response line included; the reply that reaches the configured number is
# 421 4.7.0, which closes the session when sent (attack class 6, repeated
# failures).  A 334 of the application's own is refused while a
# verification request is pending: the mechanism cannot go on without it.
from __future__ import annotations

import base64

from ._events import Reply
from ._replies import rejection
from ._errors import LocalProtocolError
from .sasl import (
    SERVER_MECHANISMS,
    Challenge,
    CheckPassword,
    CheckToken,
    Failure,
    SASLError,
    ServerMechanism,
    Step,
    Success,
)

__all__ = ["ServerAuth", "TOO_MANY_AUTH_FAILURES", "AUTH_OK"]

TOO_MANY_AUTH_FAILURES = rejection(421, "4.7.0", "Too many authentication failures")
AUTH_OK = rejection(235, "2.7.0", "Authentication successful")
AUTH_CANCELLED = rejection(501, "5.7.0", "Authentication cancelled")


class ServerAuth:
    """AUTH state of one server session (made at its first AUTH command)."""

    __slots__ = ("hostname", "max_failures", "failures", "success", "_mechanism", "_step")

    def __init__(self, hostname: str, max_failures: int) -> None:
        self.hostname = hostname
        self.max_failures = max_failures
        #: Failed attempts so far in this session.
        self.failures = 0
        #: The successful result, once authenticated.
        self.success: Success | None = None
        self._mechanism: ServerMechanism | None = None
        self._step: Step | None = None

    def reset(self) -> None:
        """Forget everything (RFC 3207 §4.2: after STARTTLS; XCLIENT)."""
        self.success = None
        self._mechanism = None
        self._step = None

    @property
    def exhausted(self) -> bool:
        """True when no more attempts are allowed."""
        return self.failures >= self.max_failures

    def start(self, name: str, initial_response: bytes | None) -> None:
        """Begin an attempt with mechanism *name*."""
        factory = SERVER_MECHANISMS[name]
        if name == "CRAM-MD5":
            mechanism: ServerMechanism = factory(hostname=self.hostname)  # type: ignore[call-arg]
        else:
            mechanism = factory()
        self._mechanism = mechanism
        self._step = mechanism.start(initial_response)

    def respond(self, data: bytes) -> None:
        """Pass the client's answer to the last challenge."""
        mechanism = self._mechanism
        if mechanism is None or mechanism.done:
            # The application sent a 334 of its own after the mechanism
            # ended: there is nothing to continue.
            self._mechanism = None
            self._step = Failure(reason="Unexpected SASL response", code=501, enhanced="5.5.2")
            return
        self._step = mechanism.respond(data)

    @property
    def request(self) -> object | None:
        """The verification request awaiting the application's answer."""
        step = self._step
        if step is None or isinstance(step, (Challenge, Success, Failure)):
            return None
        return step

    def reply(self, answer: object = None) -> Reply:
        """The reply for the current step, resuming it with *answer* first
        when a verification request is pending."""
        assert self._step is not None
        request = self.request
        if request is not None:
            assert self._mechanism is not None
            if answer is None and isinstance(request, (CheckPassword, CheckToken)):
                answer = False  # no verdict from the application: refuse
            try:
                self._step = self._mechanism.resume(answer)
            except SASLError as exc:
                raise LocalProtocolError(f"bad answer to {request!r}: {exc}") from None
        step = self._step
        if isinstance(step, Challenge):
            text = base64.b64encode(step.data).decode("ascii")
            return Reply._trusted(code=334, text=(text,), enhanced=None)
        if isinstance(step, Success):
            return AUTH_OK
        # No mechanism of smtpproto.sasl asks the application twice, so
        # resume() has ended the attempt or sent a challenge.
        assert isinstance(step, Failure), step
        return self.limited(rejection(step.code, step.enhanced, step.reason))

    def limited(self, reply: Reply) -> Reply:
        """*reply* to a failed attempt, or 421 when this failure is the last
        one allowed (attack class 6: close after N failures)."""
        if self.failures + 1 >= self.max_failures:
            return TOO_MANY_AUTH_FAILURES
        return reply

    def failure_reply(self) -> Reply:
        """The reply for a failed attempt (421 once failures run out)."""
        return self.limited(rejection(535, "5.7.8", "Authentication credentials invalid"))

    def finish(self, reply: Reply) -> None:
        """Record the reply sent to end or continue the exchange."""
        if reply.is_intermediate:
            if reply.code != 334:
                raise LocalProtocolError(
                    f"only 334 continues an AUTH exchange (RFC 4954 §4), not {reply.code}"
                )
            if self.request is not None:
                # The mechanism waits for the application's verdict and
                # cannot take another response before it.
                raise LocalProtocolError(
                    f"a 334 cannot be sent while the verification request {self.request!r} "
                    "is pending; answer it with auth_reply()"
                )
            return
        if reply.code == 235 and isinstance(self._step, Success):
            self.success = self._step
        elif reply.code >= 400:
            self.failures += 1
        self._mechanism = None
        self._step = None
