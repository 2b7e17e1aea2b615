"""prepare(): the envelope and content of what the client sends."""

from __future__ import annotations

from collections.abc import Iterator
from email import policy
from email.message import EmailMessage, Message

import pytest

from smtpproto.flows import DsnOptions, prepare


def content(outgoing: object) -> bytes:
    return b"".join(outgoing.chunks)  # type: ignore[attr-defined]


def message(**headers: str) -> EmailMessage:
    msg = EmailMessage()
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("Hello.\n")
    return msg


def test_envelope_from_from_to_cc_bcc() -> None:
    msg = message(
        From="Alice <alice@example.org>",
        To="Bob <bob@example.org>, carol@example.org",
        Cc="dave@example.org",
        Bcc="Eve <eve@example.org>, frank@example.org",
        Subject="hi",
    )
    out = prepare(msg)
    assert out.sender == "alice@example.org"
    assert out.recipients == [
        "bob@example.org",
        "carol@example.org",
        "dave@example.org",
        "eve@example.org",
        "frank@example.org",
    ]
    data = content(out)
    assert b"Bcc" not in data and b"eve@" not in data and b"frank@" not in data
    assert b"To: Bob <bob@example.org>, carol@example.org\r\n" in data
    assert out.size == len(data)
    assert not out.eight_bit and not out.smtputf8 and not out.requiretls
    assert out.dsn == DsnOptions()
    # The caller's message is left as it was.
    assert msg["Bcc"] == "Eve <eve@example.org>, frank@example.org"


def test_sender_header_wins_over_from() -> None:
    out = prepare(message(From="a@example.org, b@example.org", Sender="s@example.org", To="t@example.org"))
    assert out.sender == "s@example.org"


def test_sender_header_without_address_falls_back_to_from() -> None:
    out = prepare(message(From="a@example.org", Sender="undisclosed:;", To="t@example.org"))
    assert out.sender == "a@example.org"


def test_explicit_envelope_wins_over_headers() -> None:
    out = prepare(message(From="a@example.org", To="t@example.org"), "", ["x@example.net"])
    assert out.sender == ""  # the null reverse-path, asked for explicitly
    assert out.recipients == ["x@example.net"]


def test_newest_resent_block_gives_the_envelope() -> None:
    msg = Message(policy=policy.default)
    # Newest block first (RFC 5322 §3.6.6), with a trace field between blocks.
    msg["Resent-From"] = "forwarder2@example.org"
    msg["Resent-Date"] = "Mon, 1 Jan 2024 10:00:00 +0000"
    msg["Resent-To"] = "new1@example.org, new2@example.org"
    msg["Resent-Bcc"] = "hidden@example.org"
    msg["Received"] = "from x by y; Mon, 1 Jan 2024 09:00:00 +0000"
    msg["Resent-Sender"] = "old-sender@example.org"
    msg["Resent-From"] = "forwarder1@example.org"
    msg["Resent-Date"] = "Sun, 31 Dec 2023 10:00:00 +0000"
    msg["Resent-To"] = "old@example.org"
    msg["Resent-Bcc"] = "oldhidden@example.org"
    msg["From"] = "author@example.org"
    msg["To"] = "first@example.org"
    msg.set_payload("body\n")
    out = prepare(msg)
    assert out.sender == "forwarder2@example.org"
    assert out.recipients == ["new1@example.org", "new2@example.org", "hidden@example.org"]
    data = content(out)
    assert b"Resent-Bcc" not in data and b"hidden@" not in data
    assert b"Resent-To: old@example.org\r\n" in data  # history stays


def test_resent_block_after_a_trace_field_and_at_the_end() -> None:
    msg = Message()
    msg["Received"] = "from x by y; Mon, 1 Jan 2024 09:00:00 +0000"
    msg["Resent-Date"] = "Mon, 1 Jan 2024 10:00:00 +0000"
    msg["Resent-From"] = "fwd@example.org"
    msg["Resent-To"] = "to@example.org"
    out = prepare(msg)
    assert (out.sender, out.recipients) == ("fwd@example.org", ["to@example.org"])


def test_adjacent_resent_blocks_split_at_a_repeated_field() -> None:
    msg = EmailMessage()
    msg["Resent-Sender"] = "sender2@example.org"
    msg["Resent-From"] = "a2@example.org, b2@example.org"
    msg["Resent-Date"] = "Mon, 1 Jan 2024 10:00:00 +0000"
    msg["Resent-Cc"] = "new@example.org"
    msg["Resent-From"] = "old@example.org"
    msg["Resent-Date"] = "Sun, 31 Dec 2023 10:00:00 +0000"
    msg["Resent-To"] = "older@example.org"
    msg["From"] = "author@example.org"
    msg["To"] = "first@example.org"
    out = prepare(msg)
    assert out.sender == "sender2@example.org"
    assert out.recipients == ["new@example.org"]


def test_resent_fields_without_resent_date_are_ignored() -> None:
    out = prepare(message(Resent_To="x@example.org", From="a@example.org", To="t@example.org"))
    assert (out.sender, out.recipients) == ("a@example.org", ["t@example.org"])


def test_crlf_line_ends_from_a_message_with_lf_policy() -> None:
    msg = EmailMessage(policy=policy.default.clone(linesep="\n"))
    msg["From"] = "a@example.org"
    msg["To"] = "b@example.org"
    msg.set_content("one\ntwo\n")
    data = content(prepare(msg))
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert data.endswith(b"one\r\ntwo\r\n")


def test_compat32_message_is_generated_with_crlf() -> None:
    msg = Message()  # compat32 policy
    msg["From"] = "a@example.org"
    msg["To"] = "b@example.org"
    msg.set_payload("line\n")
    data = content(prepare(msg))
    assert data == b"From: a@example.org\r\nTo: b@example.org\r\n\r\nline\r\n"


def test_eight_bit_body_without_smtputf8() -> None:
    msg = message(From="a@example.org", To="b@example.org", Subject="héllo")
    msg.set_content("héllo wörld\n")
    out = prepare(msg)
    data = content(out)
    assert out.eight_bit and not out.smtputf8
    assert b"Subject: =?utf-8?q?h=C3=A9llo?=" in data  # an encoded word: ASCII headers


def test_utf8_headers_need_smtputf8() -> None:
    msg = EmailMessage(policy=policy.SMTPUTF8)
    msg["From"] = "a@example.org"
    msg["To"] = "b@example.org"
    msg["Subject"] = "héllo"
    msg.set_content("ascii body\n")
    out = prepare(msg)
    assert out.smtputf8 and out.eight_bit
    assert "Subject: héllo\r\n".encode() in content(out)


def test_utf8_addresses_need_smtputf8_and_stay_readable() -> None:
    msg = message(From="jösé@exämple.org", To="b@example.org")
    out = prepare(msg)
    assert out.sender == "jösé@exämple.org"
    assert out.smtputf8
    # RFC 6532: the address goes into the header as UTF-8, not encoded words.
    assert "From: jösé@exämple.org\r\n".encode() in content(out)


def test_utf8_recipient_given_explicitly() -> None:
    out = prepare(message(From="a@example.org", To="b@example.org"), recipients=["ü@example.org"])
    assert out.smtputf8


def test_declared_flags_override_detection() -> None:
    msg = message(From="a@example.org", To="b@example.org")
    out = prepare(msg, eight_bit=True, smtputf8=True, requiretls=True, dsn=DsnOptions(ret="HDRS"))
    assert out.eight_bit and out.smtputf8 and out.requiretls and out.dsn.ret == "HDRS"


def test_missing_envelope_is_an_error() -> None:
    with pytest.raises(ValueError, match="From or Sender"):
        prepare(message(To="b@example.org"))
    with pytest.raises(ValueError, match="no recipient"):
        prepare(message(From="a@example.org"))
    with pytest.raises(ValueError, match="no recipient"):
        prepare(message(From="a@example.org", To="b@example.org"), recipients=[])
    with pytest.raises(ValueError, match="explicit sender"):
        prepare(b"x\r\n", None, ["b@example.org"])
    with pytest.raises(ValueError, match="explicit sender"):
        prepare(iter([b"x"]), "a@example.org")
    with pytest.raises(ValueError, match="at least one recipient"):
        prepare(b"x\r\n", "a@example.org", [])


def test_bytes_are_sent_as_given() -> None:
    raw = b"Subject: x\r\n\r\n" + b"a" * 70000 + b"\r\n"
    out = prepare(bytearray(raw), "a@example.org", iter(["b@example.org"]))
    chunks = list(out.chunks)
    assert len(chunks) == 2 and all(isinstance(c, bytes) for c in chunks)
    assert b"".join(chunks) == raw
    assert out.size == len(raw)
    assert out.recipients == ["b@example.org"]
    assert not out.eight_bit and not out.smtputf8


@pytest.mark.parametrize(
    ("raw", "eight_bit", "smtputf8"),
    [
        (b"Subject: x\r\n\r\nplain\r\n", False, False),
        ("Subject: x\r\n\r\nbödy\r\n".encode(), True, False),
        ("Subject: ü\r\n\r\nbody\r\n".encode(), True, True),
        ("Subject: ü".encode(), True, True),  # no body at all: all of it is header
        (b"", False, False),
    ],
)
def test_bytes_detection(raw: bytes, eight_bit: bool, smtputf8: bool) -> None:
    out = prepare(raw, "a@example.org", ["b@example.org"])
    assert (out.eight_bit, out.smtputf8) == (eight_bit, smtputf8)
    assert content(out) == raw


def test_bytes_with_utf8_envelope() -> None:
    out = prepare(b"x\r\n", "ä@example.org", ["b@example.org"])
    assert out.smtputf8 and not out.eight_bit


def test_iterator_is_streamed_not_joined() -> None:
    pulls = []

    def chunks() -> Iterator[bytes]:
        for index in range(3):
            pulls.append(index)
            yield b"chunk %d\r\n" % index

    source = chunks()
    out = prepare(source, "a@example.org", ["b@example.org"], size=27, eight_bit=True, smtputf8=False)
    assert pulls == []  # nothing read yet
    assert out.chunks is source
    assert (out.size, out.eight_bit, out.smtputf8) == (27, True, False)
    assert next(iter(out.chunks)) == b"chunk 0\r\n"
    assert pulls == [0]


def test_iterator_defaults() -> None:
    out = prepare([b"x"], "a@example.org", ["ü@example.org"])
    assert out.size is None and not out.eight_bit
    assert out.smtputf8  # from the address, which prepare can see
