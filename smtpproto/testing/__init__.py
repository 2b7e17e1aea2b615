"""Hypothesis strategies for fuzzing SMTP code built on smtpproto.

Install the ``testing`` extra (``pip install smtpproto[testing]``), which
brings in Hypothesis, then use the strategies in your own tests with
``hypothesis.given``, as this package's own ``tests/test_strategies.py`` and
``tests/test_properties.py`` do.

The strategies come in three families:

* grammar values, valid per RFC 5321 §4.1.2-§4.1.3 and within the
  §4.5.3.1 length limits: :func:`domains`, :func:`address_literals`,
  :func:`local_parts`, :func:`mailboxes`, :func:`esmtp_parameters`,
  :func:`mail_parameters`, :func:`rcpt_parameters`; and
  :func:`invalid_mailboxes`, which break that grammar one rule at a time;
* protocol values: :func:`commands` (every type in :data:`COMMAND_TYPES`,
  the ESMTP ones included: STARTTLS, AUTH, BDAT, LHLO, XCLIENT) and
  :func:`replies` (events), :func:`command_lines` (raw bytes, valid and
  mangled), :func:`message_bodies` (hostile line endings and dots),
  :func:`sessions` (a valid client session as events: DATA or BDAT
  transactions, optionally AUTH PLAIN, SMTP or LMTP) and
  :func:`session_transcripts` (the same as wire bytes, made by
  :func:`transcribe`);
* perturbations: :func:`split_points` and :func:`chunkings` to cut data
  into pieces, :func:`mutated_bytes` to damage it.

Everything is built on the sans-I/O core (no sockets) and generates fast
enough for Hypothesis' default health checks.  Importing this package
imports Hypothesis; importing :mod:`smtpproto` alone does not.
"""

from __future__ import annotations

from .strategies import (
    COMMAND_TYPES,
    address_literals,
    chunkings,
    command_lines,
    commands,
    domains,
    esmtp_parameters,
    invalid_mailboxes,
    local_parts,
    mail_parameters,
    mailboxes,
    message_bodies,
    mutated_bytes,
    rcpt_parameters,
    replies,
    session_transcripts,
    sessions,
    split_points,
    transcribe,
)

__all__ = [
    "COMMAND_TYPES",
    "address_literals",
    "chunkings",
    "command_lines",
    "commands",
    "domains",
    "esmtp_parameters",
    "invalid_mailboxes",
    "local_parts",
    "mail_parameters",
    "mailboxes",
    "message_bodies",
    "mutated_bytes",
    "rcpt_parameters",
    "replies",
    "session_transcripts",
    "sessions",
    "split_points",
    "transcribe",
]
