"""SASL mechanisms: RFC test vectors, every client against every server in
memory, attack class 6 (AUTH abuse), and choosing a mechanism."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpproto.sasl import (
    CLIENT_MECHANISMS,
    SERVER_MECHANISMS,
    Challenge,
    CheckPassword,
    CheckToken,
    ClientMechanism,
    CramMD5Client,
    CramMD5Server,
    Failure,
    LoginClient,
    LoginServer,
    LookupPassword,
    LookupScram,
    OAuthBearerClient,
    OAuthBearerServer,
    PlainClient,
    PlainServer,
    SASLError,
    ScramCredentials,
    ScramSha256Client,
    ScramSha256Server,
    ServerMechanism,
    Step,
    Success,
    XOAuth2Client,
    XOAuth2Server,
    choose_client_mechanism,
    saslprep,
)

MALFORMED = (501, "5.5.2")
REJECTED = (535, "5.7.8")
TOO_LONG = (500, "5.5.6")
SERVER_FIRST = (501, "5.7.0")  # an initial response to a server-first mechanism

# RFC 7677 §3
SCRAM_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
SCRAM_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SCRAM_NONCE = SCRAM_CLIENT_NONCE + SCRAM_SERVER_NONCE
SCRAM_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
SCRAM_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
SCRAM_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
SCRAM_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SCRAM_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
PENCIL = ScramCredentials.from_password("pencil", salt=SCRAM_SALT, iterations=4096)

# RFC 7628 §4.1 and §4.3 (IMAP examples), base64 as printed in the RFC
OAUTHBEARER_INITIAL = base64.b64decode(
    "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVy"
    "IHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
)
OAUTHBEARER_ERROR = base64.b64decode(
    "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwib3BlbmlkLWNvbmZpZ3Vy"
    "YXRpb24iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtub3duL29wZW5pZC1jb25maWd1cmF0aW9uIn0="
)
RFC_TOKEN = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="


def failure_code(step: Step) -> tuple[int, str]:
    assert isinstance(step, Failure), step
    return step.code, step.enhanced


# --- an in-memory credential store and driver -----------------------------


@dataclass
class Store:
    """The application side: answers verification requests."""

    passwords: dict[str, str] = field(default_factory=lambda: {"user": "pencil"})
    tokens: dict[str, str] = field(default_factory=lambda: {"user": RFC_TOKEN})
    asked: list[Step] = field(default_factory=list)

    def answer(self, step: Step) -> object:
        self.asked.append(step)
        if isinstance(step, CheckPassword):
            return self.passwords.get(step.authcid) == step.password
        if isinstance(step, LookupPassword):
            return self.passwords.get(step.authcid)
        if isinstance(step, LookupScram):
            password = self.passwords.get(step.authcid)
            if password is None:
                return None
            return ScramCredentials.from_password(password, salt=SCRAM_SALT)
        assert isinstance(step, CheckToken)
        return self.tokens.get(step.user) == step.token


def drive(
    client: ClientMechanism, server: ServerMechanism, store: Store, *, initial: bool = True
) -> Step:
    """Run one exchange in memory until the server ends it."""
    step = server.start(client.initial_response() if initial else None)
    for _ in range(10):
        if isinstance(step, (Success, Failure)):
            assert server.done
            return step
        if isinstance(step, Challenge):
            step = server.respond(client.respond(step.data))
        else:
            step = server.resume(store.answer(step))
    raise AssertionError("the exchange did not end")


Pair = tuple[Callable[[str, str], ClientMechanism], Callable[[], ServerMechanism]]
PASSWORD_PAIRS: list[Pair] = [
    (PlainClient, PlainServer),
    (LoginClient, LoginServer),
    (CramMD5Client, CramMD5Server),
    (ScramSha256Client, ScramSha256Server),
]
TOKEN_PAIRS: list[Pair] = [
    (XOAuth2Client, XOAuth2Server),
    (OAuthBearerClient, OAuthBearerServer),
]
ALL_SERVERS: list[Callable[[], ServerMechanism]] = [
    PlainServer,
    LoginServer,
    CramMD5Server,
    ScramSha256Server,
    XOAuth2Server,
    OAuthBearerServer,
]


# --- RFC test vectors -------------------------------------------------------


def test_cram_md5_rfc2195_example() -> None:
    server = CramMD5Server("postoffice.reston.mci.net", nonce="1896.697170952")
    challenge = server.start(None)
    assert challenge == Challenge(data=b"<1896.697170952@postoffice.reston.mci.net>")
    client = CramMD5Client("tim", "tanstaaftanstaaf")
    assert client.initial_response() is None
    assert not client.complete
    response = client.respond(challenge.data)
    assert response == b"tim b913a602c7eda7a495b4e6e7334d3890"
    assert client.complete
    assert server.respond(response) == LookupPassword(authcid="tim")
    assert server.resume("tanstaaftanstaaf") == Success(authcid="tim", authzid=None)


def test_scram_sha256_rfc7677_example_client() -> None:
    client = ScramSha256Client("user", "pencil", nonce=SCRAM_CLIENT_NONCE)
    assert client.initial_response() == SCRAM_FIRST
    assert client.respond(SCRAM_SERVER_FIRST) == SCRAM_FINAL
    # A 235 now would come before the server proved itself: not complete.
    assert not client.complete
    assert client.respond(SCRAM_SERVER_FINAL) == b""
    assert client.complete


def test_scram_sha256_rfc7677_example_server() -> None:
    server = ScramSha256Server(nonce=SCRAM_SERVER_NONCE)
    assert server.start(SCRAM_FIRST) == LookupScram(authcid="user")
    assert server.resume(PENCIL) == Challenge(data=SCRAM_SERVER_FIRST)
    assert server.respond(SCRAM_FINAL) == Challenge(data=SCRAM_SERVER_FINAL)
    assert not server.done
    assert server.respond(b"") == Success(authcid="user", authzid=None)
    assert server.done


def test_scram_credentials_never_hold_the_password() -> None:
    assert "pencil" not in repr(PENCIL)
    assert len(PENCIL.stored_key) == len(PENCIL.server_key) == 32
    assert PENCIL.iterations == 4096 and PENCIL.salt == SCRAM_SALT
    fresh = ScramCredentials.from_password("pencil")
    assert len(fresh.salt) == 16 and fresh.salt != SCRAM_SALT


def test_plain_rfc4616_examples() -> None:
    # §4: "AHRpbQB0YW5zdGFhZnRhbnN0YWFm" and "VXJzZWwAS3VydAB4aXBqM3BsbXE="
    simple = base64.b64decode("AHRpbQB0YW5zdGFhZnRhbnN0YWFm")
    proxy = base64.b64decode("VXJzZWwAS3VydAB4aXBqM3BsbXE=")
    assert PlainClient("tim", "tanstaaftanstaaf").initial_response() == simple
    assert PlainClient("Kurt", "xipj3plmq", authzid="Ursel").initial_response() == proxy
    server = PlainServer()
    assert server.start(simple) == CheckPassword(
        authcid="tim", password="tanstaaftanstaaf", authzid=None
    )
    assert server.resume(True) == Success(authcid="tim", authzid=None)
    server = PlainServer()
    step = server.start(proxy)
    assert step == CheckPassword(authcid="Kurt", password="xipj3plmq", authzid="Ursel")
    assert "xipj3plmq" not in repr(step)
    # "the server rejects the client's request" to act as Ursel
    assert failure_code(server.resume(False)) == REJECTED


def test_oauthbearer_rfc7628_examples() -> None:
    client = OAuthBearerClient("user@example.com", RFC_TOKEN, host="server.example.com", port=143)
    assert client.initial_response() == OAUTHBEARER_INITIAL
    server = OAuthBearerServer(
        scope="example_scope",
        openid_configuration="https://example.com/.well-known/openid-configuration",
    )
    step = server.start(OAUTHBEARER_INITIAL)
    assert step == CheckToken(user="user@example.com", token=RFC_TOKEN, authzid=None)
    assert RFC_TOKEN not in repr(step)
    # §4.3: the error challenge, the client's ^A, then the failure.
    error = server.resume(False)
    assert error == Challenge(data=OAUTHBEARER_ERROR)
    assert client.respond(OAUTHBEARER_ERROR) == b"\x01"
    assert client.error == json.loads(OAUTHBEARER_ERROR)
    assert not client.complete
    assert failure_code(server.respond(b"\x01")) == REJECTED


@pytest.mark.parametrize(
    ("text", "prepared"),
    [
        ("I\u00adX", "IX"),  # 1: SOFT HYPHEN mapped to nothing
        ("user", "user"),  # 2: no transformation
        ("USER", "USER"),  # 3: case preserved
        ("\u00aa", "a"),  # 4: output is NFKC
        ("\u2168", "IX"),  # 5: output is NFKC
        ("a\u00a0b", "a b"),  # non-ASCII space mapped to SPACE
        ("\u0627\u0031\u0628", "\u0627\u0031\u0628"),  # RandALCat at both ends
        ("", ""),
    ],
)
def test_saslprep_rfc4013_examples(text: str, prepared: str) -> None:
    assert saslprep(text) == prepared


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("\u0007", "prohibited ASCII control"),  # 6: prohibited character
        ("\u0627\u0031", "start and end right-to-left"),  # 7: bidirectional check
        ("\u0627a\u0628", "mixed with left-to-right"),
        ("a\ue000", "private use"),
        ("a\u0221", "unassigned"),  # assigned only after Unicode 3.2
    ],
)
def test_saslprep_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        saslprep(text)


def test_saslprep_query_strings_allow_unassigned() -> None:
    assert saslprep("a\u0221", allow_unassigned=True) == "a\u0221"
    with pytest.raises(TypeError):
        saslprep(b"user")  # type: ignore[arg-type]


# --- every client against every server --------------------------------------


@pytest.mark.parametrize("initial", [True, False])
@pytest.mark.parametrize(("client_cls", "server_cls"), PASSWORD_PAIRS)
def test_password_mechanisms_succeed(
    client_cls: Callable[[str, str], ClientMechanism],
    server_cls: Callable[[], ServerMechanism],
    initial: bool,
) -> None:
    client = client_cls("user", "pencil")
    assert client.name == server_cls().name
    assert not client.complete
    assert drive(client, server_cls(), Store(), initial=initial) == Success(
        authcid="user", authzid=None
    )
    assert client.complete


@pytest.mark.parametrize("initial", [True, False])
@pytest.mark.parametrize(("client_cls", "server_cls"), PASSWORD_PAIRS)
def test_password_mechanisms_refuse_a_wrong_password(
    client_cls: Callable[[str, str], ClientMechanism],
    server_cls: Callable[[], ServerMechanism],
    initial: bool,
) -> None:
    step = drive(client_cls("user", "wrong"), server_cls(), Store(), initial=initial)
    assert failure_code(step) == REJECTED


@pytest.mark.parametrize(("client_cls", "server_cls"), PASSWORD_PAIRS)
def test_password_mechanisms_refuse_an_unknown_user(
    client_cls: Callable[[str, str], ClientMechanism],
    server_cls: Callable[[], ServerMechanism],
) -> None:
    assert failure_code(drive(client_cls("nobody", "pencil"), server_cls(), Store())) == REJECTED


@pytest.mark.parametrize("initial", [True, False])
@pytest.mark.parametrize(("client_cls", "server_cls"), TOKEN_PAIRS)
def test_token_mechanisms(
    client_cls: Callable[[str, str], ClientMechanism],
    server_cls: Callable[[], ServerMechanism],
    initial: bool,
) -> None:
    client = client_cls("user", RFC_TOKEN)
    assert drive(client, server_cls(), Store(), initial=initial) == Success(
        authcid="user", authzid=None
    )
    assert client.complete

    client = client_cls("user", "expired")
    assert failure_code(drive(client, server_cls(), Store(), initial=initial)) == REJECTED
    assert not client.complete
    assert client.error is not None  # type: ignore[attr-defined]


def test_xoauth2_wire_format_and_error_report() -> None:
    client = XOAuth2Client("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
    message = client.initial_response()
    assert message == (
        b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
        b"\x01\x01"
    )
    server = XOAuth2Server(scope="https://mail.google.com/")
    assert server.start(message) == CheckToken(
        user="someuser@example.com",
        token="ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg",
        authzid=None,
    )
    error = server.resume(False)
    assert isinstance(error, Challenge)
    assert json.loads(error.data) == {
        "status": "401",
        "schemes": "Bearer",
        "scope": "https://mail.google.com/",
    }
    assert client.respond(error.data) == b""
    assert client.error == json.loads(error.data)
    assert failure_code(server.respond(b"")) == REJECTED
    assert json.loads(_refuse(XOAuth2Server(), message).data) == {
        "status": "401",
        "schemes": "Bearer",
    }
    assert json.loads(_refuse(OAuthBearerServer(), OAUTHBEARER_INITIAL).data) == {
        "status": "invalid_token"
    }


def _refuse(server: ServerMechanism, message: bytes) -> Challenge:
    assert isinstance(server.start(message), CheckToken)
    error = server.resume(False)
    assert isinstance(error, Challenge)
    return error


def test_oauthbearer_without_user_host_or_port() -> None:
    client = OAuthBearerClient("", RFC_TOKEN)
    message = client.initial_response()
    assert message == b"n,,\x01auth=Bearer " + RFC_TOKEN.encode() + b"\x01\x01"
    server = OAuthBearerServer()
    assert server.start(message) == CheckToken(user="", token=RFC_TOKEN, authzid=None)
    assert server.resume(True) == Success(authcid="", authzid=None)


def test_oauthbearer_user_is_gs2_escaped() -> None:
    message = OAuthBearerClient("a,b=c", RFC_TOKEN).initial_response()
    assert message.startswith(b"n,a=a=2Cb=3Dc,\x01")
    step = OAuthBearerServer().start(message)
    assert isinstance(step, CheckToken) and step.user == "a,b=c"


def test_plain_and_scram_carry_the_authzid() -> None:
    store = Store()
    step = drive(PlainClient("user", "pencil", authzid="admin"), PlainServer(), store)
    assert step == Success(authcid="user", authzid="admin")
    assert store.asked == [CheckPassword(authcid="user", password="pencil", authzid="admin")]

    client = ScramSha256Client("user", "pencil", authzid="ad,min", nonce="abc")
    assert client.initial_response() == b"n,a=ad=2Cmin,n=user,r=abc"
    client = ScramSha256Client("user", "pencil", authzid="ad,min")
    assert drive(client, ScramSha256Server(), Store()) == Success(authcid="user", authzid="ad,min")


def test_scram_prepares_and_escapes_user_names() -> None:
    store = Store(passwords={"I,X=": "pen\u00adcil"})
    client = ScramSha256Client("I\u00ad,X=", "pencil", nonce="n")
    assert client.initial_response() == b"n,,n=I=2CX=3D,r=n"
    client = ScramSha256Client("\u2160,X=", "pencil")  # ROMAN NUMERAL ONE -> I
    assert drive(client, ScramSha256Server(), store) == Success(authcid="I,X=", authzid=None)


def scram_by_hand(bare: str, gs2_header: str, server_first: bytes) -> tuple[bytes, bytes]:
    """The client-final message and expected server-final message for
    "pencil", computed straight from the RFC 5802 §3 formulas."""
    nonce = server_first.split(b",")[0][2:].decode()
    without_proof = f"c={base64.b64encode(gs2_header.encode()).decode()},r={nonce}"
    auth_message = f"{bare},{server_first.decode()},{without_proof}".encode()
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", SCRAM_SALT, 4096)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    signature = hmac.new(stored_key, auth_message, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    verifier = hmac.new(server_key, auth_message, "sha256").digest()
    final = f"{without_proof},p={base64.b64encode(proof).decode()}".encode()
    return final, b"v=" + base64.b64encode(verifier)


def test_scram_by_hand_matches_the_rfc() -> None:
    assert scram_by_hand("n=user,r=" + SCRAM_CLIENT_NONCE, "n,,", SCRAM_SERVER_FIRST) == (
        SCRAM_FINAL,
        SCRAM_SERVER_FINAL,
    )


def test_scram_server_accepts_y_flag_and_extensions() -> None:
    # "y": the client supports channel binding but thinks the server does
    # not (RFC 5802 §6), which is true: no -PLUS mechanism is offered.
    # Unknown extensions after the nonce are ignored but still signed.
    server = ScramSha256Server(nonce="S")
    assert server.start(b"y,,n=user,r=C,x=ext") == LookupScram(authcid="user")
    server_first = server.resume(PENCIL)
    assert server_first == Challenge(data=b"r=CS,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    final, verifier = scram_by_hand("n=user,r=C,x=ext", "y,,", server_first.data)
    assert final.startswith(b"c=eSws,r=CS,p=")
    assert server.respond(final) == Challenge(data=verifier)
    assert server.respond(b"") == Success(authcid="user", authzid=None)


def test_scram_server_checks_the_gs2_header_with_authzid() -> None:
    server = ScramSha256Server(nonce="S")
    assert server.start(b"n,a=admin,n=user,r=C") == LookupScram(authcid="user")
    server_first = server.resume(PENCIL)
    assert isinstance(server_first, Challenge)
    final, verifier = scram_by_hand("n=user,r=C", "n,a=admin,", server_first.data)
    assert server.respond(final) == Challenge(data=verifier)
    assert server.respond(b"") == Success(authcid="user", authzid="admin")
    # The same proof with c=biws ("n,,") does not match the header sent.
    server = ScramSha256Server(nonce="S")
    server.start(b"n,a=admin,n=user,r=C")
    server.resume(PENCIL)
    final, _ = scram_by_hand("n=user,r=C", "n,,", server_first.data)
    assert failure_code(server.respond(final)) == REJECTED


def test_scram_client_ignores_server_extensions() -> None:
    client = scram_client_after_first()
    server_first = SCRAM_SERVER_FIRST + b",x=ext"
    final, verifier = scram_by_hand("n=user,r=" + SCRAM_CLIENT_NONCE, "n,,", server_first)
    assert client.respond(server_first) == final
    assert client.respond(verifier) == b""
    assert client.complete


def test_login_prompts_and_initial_response() -> None:
    server = LoginServer()
    assert server.start(None) == Challenge(data=b"Username:")
    assert server.respond(b"user") == Challenge(data=b"Password:")
    assert server.respond(b"pencil") == CheckPassword(
        authcid="user", password="pencil", authzid=None
    )
    server = LoginServer()
    assert server.start(b"user") == Challenge(data=b"Password:")
    client = LoginClient("user", "pencil")
    assert client.initial_response() is None
    # The prompts are for humans: the client answers by position.
    assert client.respond(b"User Name\x00") == b"user"
    assert not client.complete
    assert client.respond(b"") == b"pencil"
    assert client.complete
    with pytest.raises(SASLError, match="third challenge"):
        client.respond(b"Password:")


def test_buffers_other_than_bytes_are_accepted() -> None:
    server = PlainServer()
    step = server.start(memoryview(b"\0user\0pencil"))
    assert isinstance(step, CheckPassword)
    client = CramMD5Client("tim", "tanstaaftanstaaf")
    assert client.respond(bytearray(b"<1896.697170952@postoffice.reston.mci.net>")) == (
        b"tim b913a602c7eda7a495b4e6e7334d3890"
    )
    with pytest.raises(TypeError):
        PlainServer().start("\0user\0pencil")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        client.respond("text")  # type: ignore[arg-type]


# --- attack class 6: AUTH abuse ---------------------------------------------


@pytest.mark.parametrize("server_cls", ALL_SERVERS)
def test_empty_initial_response_is_malformed(server_cls: Callable[[], ServerMechanism]) -> None:
    # "AUTH mech =" is an empty initial response, not a missing one.
    server = server_cls()
    expected = SERVER_FIRST if server.name == "CRAM-MD5" else MALFORMED
    assert failure_code(server.start(b"")) == expected
    assert server.done


@pytest.mark.parametrize("server_cls", ALL_SERVERS)
def test_empty_answer_to_the_first_challenge_is_malformed(
    server_cls: Callable[[], ServerMechanism],
) -> None:
    server = server_cls()
    assert isinstance(server.start(None), Challenge)
    assert failure_code(server.respond(b"")) == MALFORMED


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"user\0pencil", "exactly 2 NULs, got 1"),
        (b"\0user\0pencil\0", "exactly 2 NULs, got 3"),
        (b"a\0b\0c\0d", "exactly 2 NULs, got 3"),
        (b"userpencil", "exactly 2 NULs, got 0"),
        (b"\0\0pencil", "authcid is empty"),
        (b"\0user\0", "password is empty"),
        (b"\0us\xffer\0pencil", "authcid is not valid UTF-8"),
        (b"\xc3\0user\0pencil", "authzid is not valid UTF-8"),
        (b"\0user\0pen\xc3", "password is not valid UTF-8"),
        (b"\0us\rer\0pencil", "control character"),
        (b"ad\nmin\0user\0pencil", "control character"),
    ],
)
def test_plain_malformed(message: bytes, reason: str) -> None:
    step = PlainServer().start(message)
    assert failure_code(step) == MALFORMED
    assert isinstance(step, Failure) and reason in step.reason


def test_plain_password_may_hold_anything_but_nul() -> None:
    step = PlainServer().start(b"\0user\0p\x01 \t\xc3\xa9")
    assert step == CheckPassword(authcid="user", password="p\x01 \t\u00e9", authzid=None)


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        ([b"us\xffer"], "not valid UTF-8"),
        ([b"us\x00er"], "control character"),
        ([b"user", b""], "password is empty"),
        ([b"user", b"pen\xff"], "not valid UTF-8"),
        ([b"user", b"pen\0cil"], "contains NUL"),
    ],
)
def test_login_malformed(answers: list[bytes], reason: str) -> None:
    server = LoginServer()
    step = server.start(None)
    for answer in answers:
        assert isinstance(step, Challenge)
        step = server.respond(answer)
    assert failure_code(step) == MALFORMED
    assert isinstance(step, Failure) and reason in step.reason


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (b"timb913a602c7eda7a495b4e6e7334d3890", "not 'user SP digest'"),
        (b"tim B913A602C7EDA7A495B4E6E7334D3890", "lower-case hex"),
        (b"tim b913a602c7eda7a495b4e6e7334d389", "lower-case hex"),
        (b"tim ", "lower-case hex"),
        (b" b913a602c7eda7a495b4e6e7334d3890", "user name is empty"),
        (b"t\xffm b913a602c7eda7a495b4e6e7334d3890", "not valid UTF-8"),
    ],
)
def test_cram_md5_malformed(response: bytes, reason: str) -> None:
    server = CramMD5Server("example.org")
    assert isinstance(server.start(None), Challenge)
    step = server.respond(response)
    assert failure_code(step) == MALFORMED
    assert isinstance(step, Failure) and reason in step.reason


def test_cram_md5_is_server_first() -> None:
    step = CramMD5Server().start(b"tim b913a602c7eda7a495b4e6e7334d3890")
    assert failure_code(step) == SERVER_FIRST
    # A user name with spaces survives: the digest is after the last one.
    server = CramMD5Server(nonce="1.2")
    challenge = server.start(None)
    assert isinstance(challenge, Challenge) and challenge.data == b"<1.2@localhost>"
    client = CramMD5Client("tim smith", "secret")
    assert server.respond(client.respond(challenge.data)) == LookupPassword(authcid="tim smith")
    assert server.resume("secret") == Success(authcid="tim smith", authzid=None)


def test_cram_md5_challenges_are_fresh() -> None:
    first = CramMD5Server("example.org").start(None)
    second = CramMD5Server("example.org").start(None)
    assert isinstance(first, Challenge) and isinstance(second, Challenge)
    assert first.data != second.data
    assert first.data.startswith(b"<") and first.data.endswith(b"@example.org>")


@pytest.mark.parametrize("server_cls", ALL_SERVERS)
def test_calls_out_of_order(server_cls: Callable[[], ServerMechanism]) -> None:
    server = server_cls()
    with pytest.raises(SASLError, match="respond\\(\\) called while waiting for start"):
        server.respond(b"data")
    with pytest.raises(SASLError, match="resume\\(\\) called while waiting for start"):
        server.resume(True)
    assert isinstance(server.start(None), Challenge)
    with pytest.raises(SASLError, match="start\\(\\) called while waiting for respond"):
        server.start(None)
    with pytest.raises(SASLError, match="resume\\(\\) called while waiting for respond"):
        server.resume(True)


@pytest.mark.parametrize(("client_cls", "server_cls"), PASSWORD_PAIRS)
def test_no_reuse_after_the_end(
    client_cls: Callable[[str, str], ClientMechanism],
    server_cls: Callable[[], ServerMechanism],
) -> None:
    server = server_cls()
    assert isinstance(drive(client_cls("user", "pencil"), server, Store()), Success)
    with pytest.raises(SASLError, match="start\\(\\) called while finished"):
        server.start(None)
    with pytest.raises(SASLError, match="respond\\(\\) called while finished"):
        server.respond(b"")
    with pytest.raises(SASLError, match="resume\\(\\) called while finished"):
        server.resume(True)
    # A fresh instance is a fresh attempt.
    assert isinstance(drive(client_cls("user", "pencil"), server_cls(), Store()), Success)


def test_respond_while_a_verification_is_pending() -> None:
    server = PlainServer()
    assert isinstance(server.start(b"\0user\0pencil"), CheckPassword)
    with pytest.raises(SASLError, match="respond\\(\\) called while waiting for resume"):
        server.respond(b"\0user\0pencil")
    assert server.resume(True) == Success(authcid="user", authzid=None)


@pytest.mark.parametrize(
    ("server_cls", "message", "answer"),
    [
        (PlainServer, b"\0user\0pencil", "yes"),
        (LoginServer, b"user", 1),
        (CramMD5Server, None, b"secret"),
        (ScramSha256Server, SCRAM_FIRST, "pencil"),
        (XOAuth2Server, b"user=u\x01auth=Bearer t\x01\x01", None),
        (OAuthBearerServer, b"n,,\x01auth=Bearer t\x01\x01", None),
    ],
)
def test_resume_checks_the_answer_type(
    server_cls: Callable[[], ServerMechanism], message: bytes | None, answer: object
) -> None:
    server = server_cls()
    step = server.start(message)
    while isinstance(step, Challenge):
        step = server.respond(
            b"pencil" if isinstance(server, LoginServer) else b"u " + b"0" * 32
        )
    with pytest.raises(SASLError, match="resume\\(\\) needs"):
        server.resume(answer)
    # The mistake changed nothing: a proper answer still goes through.
    assert not server.done
    proper = False if isinstance(step, (CheckPassword, CheckToken)) else None
    assert isinstance(server.resume(proper), (Failure, Challenge))


@pytest.mark.parametrize("server_cls", ALL_SERVERS)
def test_oversized_input_fails_without_crashing(
    server_cls: Callable[[], ServerMechanism],
) -> None:
    server = server_cls()
    limit = server.max_response
    assert limit >= 9216  # RFC 4954 §4: 12288 octets of base64
    assert failure_code(server.start(b"\0" * (limit + 1))) == TOO_LONG
    server = server_cls()
    assert isinstance(server.start(None), Challenge)
    assert failure_code(server.respond(b"A" * 1_000_000)) == TOO_LONG


@pytest.mark.parametrize("server_cls", ALL_SERVERS)
def test_input_at_the_limit_is_judged_normally(server_cls: Callable[[], ServerMechanism]) -> None:
    server = server_cls()
    step = server.start(b"\0" * server.max_response)
    assert failure_code(step) == (SERVER_FIRST if server.name == "CRAM-MD5" else MALFORMED)


@pytest.mark.parametrize(
    "client",
    [
        PlainClient("u", "p"),
        LoginClient("u", "p"),
        CramMD5Client("u", "p"),
        ScramSha256Client("u", "p"),
        XOAuth2Client("u", "t"),
        OAuthBearerClient("u", "t"),
    ],
)
def test_client_refuses_oversized_challenges(client: ClientMechanism) -> None:
    with pytest.raises(SASLError, match="over the 12288-octet limit"):
        client.respond(b"x" * (client.max_challenge + 1))


# --- SCRAM tampering --------------------------------------------------------


def scram_server_after_first(first: bytes = SCRAM_FIRST) -> ScramSha256Server:
    server = ScramSha256Server(nonce=SCRAM_SERVER_NONCE)
    assert isinstance(server.start(first), LookupScram)
    assert server.resume(PENCIL) == Challenge(data=SCRAM_SERVER_FIRST)
    return server


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        # a modified nonce
        (SCRAM_FINAL.replace(b"hNlF$k0", b"hNlF$k1"), REJECTED),
        # a modified proof
        (SCRAM_FINAL.replace(b"p=dHzb", b"p=dHzc"), REJECTED),
        # channel binding data that is not the GS2 header
        (SCRAM_FINAL.replace(b"c=biws", b"c=eSws"), REJECTED),
        # bad base64 inside the message
        (SCRAM_FINAL.replace(b"c=biws", b"c=bi*s"), MALFORMED),
        (SCRAM_FINAL.replace(b"AndVQ=", b"AndVQ"), MALFORMED),
        (SCRAM_FINAL[:-4] + b"=", MALFORMED),
        # a proof of the wrong length
        (SCRAM_FINAL.split(b",p=")[0] + b",p=AAAA", MALFORMED),
        # missing attributes, attributes out of order
        (SCRAM_FINAL.split(b",p=")[0], MALFORMED),
        (b"r=" + SCRAM_NONCE.encode() + b",c=biws,p=AAAA", MALFORMED),
        (b"c=biws," + SCRAM_FINAL.split(b",", 2)[2], MALFORMED),
        (b"c=biws,r=,p=AAAA", MALFORMED),
        (b"", MALFORMED),
        (b"c=biws,,p=AAAA", MALFORMED),
        (b"c=biws,1=x,p=AAAA", MALFORMED),
        (b"c=biws,r=\xff,p=AAAA", MALFORMED),
    ],
)
def test_scram_tampered_client_final(final: bytes, expected: tuple[int, str]) -> None:
    assert failure_code(scram_server_after_first().respond(final)) == expected


def test_scram_client_final_extensions_are_signed() -> None:
    # An extension before p= is part of client-final-without-proof: the
    # RFC proof no longer matches once one is inserted.
    without, proof = SCRAM_FINAL.split(b",p=")
    tampered = without + b",x=1,p=" + proof
    assert failure_code(scram_server_after_first().respond(tampered)) == REJECTED


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (b"n,,r=abc,n=user", MALFORMED),  # order
        (b"n,,n=user", MALFORMED),  # no nonce
        (b"n,,n=user,r=", MALFORMED),  # empty nonce
        (b"n,,n=user,r=a\x7fb", MALFORMED),  # nonce not printable
        (b"n,,n=us=2Ger,r=abc", MALFORMED),  # bad escape
        (b"n,,n=us=er,r=abc", MALFORMED),
        (b"n,,n=us\x00er,r=abc", MALFORMED),  # NUL in a saslname
        (b"n,,n=\xc2\xad,r=abc", MALFORMED),  # empty after SASLprep
        (b"n,,n=u\x07,r=abc", MALFORMED),  # prohibited by SASLprep
        (b"n,,n=u\xff,r=abc", MALFORMED),  # invalid UTF-8
        (b"n,,m=ext,n=user,r=abc", REJECTED),  # reserved mandatory extension
        (b"p=tls-unique,,n=user,r=abc", MALFORMED),  # channel binding asked for
        (b"x,,n=user,r=abc", MALFORMED),  # unknown flag
        (b"n,b=admin,n=user,r=abc", MALFORMED),  # not a=
        (b"n,a=,n=user,r=abc", MALFORMED),  # empty authzid
        (b"n,a=ad=min,n=user,r=abc", MALFORMED),  # bad escape in authzid
        (b"n,a=ad\rmin,n=user,r=abc", MALFORMED),  # control in authzid
        (b"n,a=ad\xffmin,n=user,r=abc", MALFORMED),  # invalid UTF-8 in authzid
        (b"n", MALFORMED),  # no GS2 header
        (b"n,a=admin", MALFORMED),  # unterminated GS2 header
        (b"n=user,r=abc", MALFORMED),  # no GS2 header
    ],
)
def test_scram_malformed_client_first(first: bytes, expected: tuple[int, str]) -> None:
    assert failure_code(ScramSha256Server().start(first)) == expected


def test_scram_server_wants_an_empty_acknowledgement() -> None:
    server = scram_server_after_first()
    assert server.respond(SCRAM_FINAL) == Challenge(data=SCRAM_SERVER_FINAL)
    assert failure_code(server.respond(b"v=x")) == MALFORMED


def scram_client_after_first(max_iterations: int = 1_000_000) -> ScramSha256Client:
    client = ScramSha256Client(
        "user", "pencil", nonce=SCRAM_CLIENT_NONCE, max_iterations=max_iterations
    )
    assert client.initial_response() == SCRAM_FIRST
    return client


@pytest.mark.parametrize(
    ("server_first", "message"),
    [
        (b"r=XXXXNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "does not extend"),
        (b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "does not extend"),
        (b"r=rOprNGfwEbeRWgbNEkqO\xc3\xa9,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "not printable"),
        (b"r=rOprNGfwEbeRWgbNEkqO x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "not printable"),
        (b"r=rOprNGfwEbeRWgbNEkqOx,s=W22*aJ0SNY7soEsUEjb6gQ==,i=4096", "salt is not valid"),
        (b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096", "salt is not valid"),
        (b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095", "under 4096"),
        (b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1", "under 4096"),
        (b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=04096", "not a number"),
        (b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4k", "not a number"),
        (b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=" + b"9" * 5000, "not a number"),
        (b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1000001", "over 1000000"),
        (b"s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOx,i=4096", "not r=,s=,i="),
        (b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==", "not r=,s=,i="),
        (b"m=x,r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "unsupported ext"),
        (b"r=rOprNGfwEbeRWgbNEkqOx,s=,i=4096", "malformed server message"),
        (b"r=rOprNGfwEbeRWgbNEkqO\xff,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "malformed server"),
        (b"e=other-error", "not r=,s=,i="),
    ],
)
def test_scram_client_refuses_tampered_server_first(server_first: bytes, message: str) -> None:
    with pytest.raises(SASLError, match=message):
        scram_client_after_first().respond(server_first)


def test_scram_client_iteration_bound_is_configurable() -> None:
    client = scram_client_after_first(max_iterations=4095)
    with pytest.raises(SASLError, match="over 4095"):
        client.respond(SCRAM_SERVER_FIRST)


@pytest.mark.parametrize(
    ("server_final", "message"),
    [
        (b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", "signature is wrong"),
        (b"v=AAAA", "signature is wrong"),
        (b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4", "not valid base64"),
        (b"e=invalid-proof", "reported an error: 'invalid-proof'"),
        (b"x=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", "not v= or e="),
        (b"", "malformed server message"),
    ],
)
def test_scram_client_verifies_the_server(server_final: bytes, message: str) -> None:
    client = scram_client_after_first()
    assert client.respond(SCRAM_SERVER_FIRST) == SCRAM_FINAL
    with pytest.raises(SASLError, match=message):
        client.respond(server_final)
    assert not client.complete


def test_scram_client_refuses_a_challenge_after_verification() -> None:
    client = scram_client_after_first()
    client.respond(SCRAM_SERVER_FIRST)
    client.respond(SCRAM_SERVER_FINAL + b",x=extension")
    assert client.complete
    with pytest.raises(SASLError, match="after its signature"):
        client.respond(SCRAM_SERVER_FINAL)


def test_scram_nonces_are_fresh_per_attempt() -> None:
    first = ScramSha256Client("user", "pencil").initial_response()
    second = ScramSha256Client("user", "pencil").initial_response()
    assert first != second
    servers = [ScramSha256Server(), ScramSha256Server()]
    challenges = []
    for server in servers:
        server.start(SCRAM_FIRST)
        step = server.resume(PENCIL)
        assert isinstance(step, Challenge)
        challenges.append(step.data)
    assert challenges[0] != challenges[1]
    assert all(c.startswith(b"r=" + SCRAM_CLIENT_NONCE.encode()) for c in challenges)


def test_scram_unknown_user_can_be_hidden() -> None:
    # Made-up credentials for an unknown user fail at the proof, like a
    # wrong password: nothing tells the client the user does not exist.
    server = ScramSha256Server()
    client = ScramSha256Client("nobody", "pencil")
    assert isinstance(server.start(client.initial_response()), LookupScram)
    challenge = server.resume(ScramCredentials.from_password("made-up"))
    assert isinstance(challenge, Challenge)
    assert failure_code(server.respond(client.respond(challenge.data))) == REJECTED


# --- OAuth message parsing ----------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        b"user=u\x01auth=Bearer t\x01",  # one ^A short
        b"user=u\x01auth=Bearer t",  # none
        b"user=u\x01auth=Bearer t\x01\x01\x01",  # extra
        b"user=u\x01auth=Bearer t\x01\x01more",
        b"auth=Bearer t\x01\x01",  # no user
        b"user=\x01auth=Bearer t\x01\x01",  # empty user
        b"user=u\x01\x01",  # no auth
        b"user=u\x01auth=Basic dTpw\x01\x01",  # not Bearer
        b"user=u\x01auth=Bearer\x01\x01",  # no token
        b"user=u\x01auth=Bearer t!ken\x01\x01",  # not a b64token
        b"user=u\x01auth=Bearer t=x\x01\x01",
        b"user=u\x01user=v\x01auth=Bearer t\x01\x01",  # repeated key
        b"user=u\x01auth\x01\x01",  # no '='
        b"us3r=u\x01auth=Bearer t\x01\x01",  # key not ALPHA
        b"=u\x01auth=Bearer t\x01\x01",  # empty key
        b"user=u\x01auth=Bearer t\x01x=\x00\x01\x01",  # value not VCHAR
        b"user=u\xff\x01auth=Bearer t\x01\x01",  # user not UTF-8
        b"user=u\r\n\x01auth=Bearer t\x01\x01",  # control in user
        b"\x01",
    ],
)
def test_xoauth2_malformed(message: bytes) -> None:
    assert failure_code(XOAuth2Server().start(message)) == MALFORMED


def test_xoauth2_accepts_a_utf8_user_and_any_scheme_case() -> None:
    step = XOAuth2Server().start("user=j\u00f6rg@example.org\x01auth=bEaReR  t0k=\x01\x01".encode())
    assert step == CheckToken(user="j\u00f6rg@example.org", token="t0k=", authzid=None)


@pytest.mark.parametrize(
    "message",
    [
        b"\x01",  # the error acknowledgement is no first message
        b"n,,auth=Bearer t\x01\x01",  # no ^A after the header
        b"n,,\x01auth=Bearer t\x01",
        b"n,,\x01\x01",  # no auth
        b"n,,\x01auth=Bearer t\x01port=x\x01\x01",
        b"n,,\x01auth=Bearer t\x01port=99999\x01\x01",
        b"n,,\x01auth=Bearer t\x01port=0143\x01\x01",
        b"p=tls-exporter,,\x01auth=Bearer t\x01\x01",  # channel binding
        b"n,a=u=,\x01auth=Bearer t\x01\x01",
        b"n,,\x01host=h\x01auth=Bearer t\x01host=g\x01\x01",
    ],
)
def test_oauthbearer_malformed(message: bytes) -> None:
    assert failure_code(OAuthBearerServer().start(message)) == MALFORMED


def test_oauthbearer_ignores_unknown_keys_and_accepts_y() -> None:
    step = OAuthBearerServer().start(
        b"y,a=user,\x01host=h\x01port=65535\x01propA=v1, v2\x01auth=Bearer t\x01\x01"
    )
    assert step == CheckToken(user="user", token="t", authzid=None)


@pytest.mark.parametrize(
    ("server_cls", "message", "bad_ack"),
    [
        (XOAuth2Server, b"user=u\x01auth=Bearer t\x01\x01", b"\x01"),
        (OAuthBearerServer, b"n,,\x01auth=Bearer t\x01\x01", b""),
    ],
)
def test_oauth_error_acknowledgement_must_be_right(
    server_cls: Callable[[], ServerMechanism], message: bytes, bad_ack: bytes
) -> None:
    server = server_cls()
    _refuse(server, message)
    assert failure_code(server.respond(bad_ack)) == MALFORMED


@pytest.mark.parametrize("client_cls", [XOAuth2Client, OAuthBearerClient])
@pytest.mark.parametrize(
    ("challenge", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"[" * 12000, "not valid JSON"),
        (b"[" * 6000 + b"]" * 6000, "not valid JSON"),  # nesting bomb
    ],
)
def test_oauth_client_parses_the_error_defensively(
    client_cls: Callable[[str, str], ClientMechanism], challenge: bytes, message: str
) -> None:
    client = client_cls("user", "t")
    client.initial_response()
    with pytest.raises(SASLError, match=message):
        client.respond(challenge)


@pytest.mark.parametrize("client_cls", [XOAuth2Client, OAuthBearerClient])
def test_oauth_client_refuses_a_second_error(
    client_cls: Callable[[str, str], ClientMechanism],
) -> None:
    client = client_cls("user", "t")
    client.initial_response()
    client.respond(b'{"status":"invalid_token"}')
    with pytest.raises(SASLError, match="after the error report"):
        client.respond(b'{"status":"invalid_token"}')


# --- client-side order and input checks ---------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: PlainClient("u", "p"),
        lambda: ScramSha256Client("u", "p"),
        lambda: XOAuth2Client("u", "t"),
        lambda: OAuthBearerClient("u", "t"),
    ],
)
def test_client_first_mechanisms(make: Callable[[], ClientMechanism]) -> None:
    client = make()
    with pytest.raises(SASLError, match="first challenge must be empty, got 5 octets"):
        client.respond(b"hello")
    client = make()
    first = client.respond(b"")
    assert first
    with pytest.raises(SASLError, match="after the first message"):
        client.initial_response()
    client = make()
    assert client.initial_response() == first or client.name == "SCRAM-SHA-256"
    with pytest.raises(SASLError, match="after the first message"):
        client.initial_response()


def test_plain_client_has_one_message() -> None:
    client = PlainClient("u", "p")
    assert not client.complete
    client.initial_response()
    assert client.complete
    with pytest.raises(SASLError, match="challenge after the message"):
        client.respond(b"")


def test_cram_md5_client_checks_challenges() -> None:
    client = CramMD5Client("u", "p")
    with pytest.raises(SASLError, match="challenge is empty"):
        client.respond(b"")
    client.respond(b"<1@x>")
    with pytest.raises(SASLError, match="second challenge"):
        client.respond(b"<2@x>")


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: PlainClient("", "p"), ValueError),
        (lambda: PlainClient("u", ""), ValueError),
        (lambda: PlainClient("u\0", "p"), ValueError),
        (lambda: PlainClient("u", "p", authzid=""), ValueError),
        (lambda: PlainClient("u", b"p"), TypeError),  # type: ignore[arg-type]
        (lambda: LoginClient("", "p"), ValueError),
        (lambda: LoginClient("u", "p\0"), ValueError),
        (lambda: LoginClient("u", None), TypeError),  # type: ignore[arg-type]
        (lambda: CramMD5Client("u", ""), ValueError),
        (lambda: CramMD5Client(b"u", "p"), TypeError),  # type: ignore[arg-type]
        (lambda: CramMD5Server("bad host"), ValueError),
        (lambda: CramMD5Server("h", nonce="<1>"), ValueError),
        (lambda: CramMD5Server(None), ValueError),  # type: ignore[arg-type]
        (lambda: XOAuth2Client("", "t"), ValueError),
        (lambda: XOAuth2Client("u\r\n", "t"), ValueError),
        (lambda: XOAuth2Client(1, "t"), TypeError),  # type: ignore[arg-type]
        (lambda: XOAuth2Client("u", "t\x01"), ValueError),
        (lambda: XOAuth2Client("u", 1), TypeError),  # type: ignore[arg-type]
        (lambda: OAuthBearerClient("u\x01", "t"), ValueError),
        (lambda: OAuthBearerClient("u", "t t"), ValueError),
        (lambda: OAuthBearerClient("u", "t", host="h\x01"), ValueError),
        (lambda: OAuthBearerClient("u", "t", port=65536), ValueError),
        (lambda: OAuthBearerClient("u", "t", port=True), ValueError),
        (lambda: ScramSha256Client("\u00ad", "p"), ValueError),
        (lambda: ScramSha256Client("u", "p\u0007"), ValueError),
        (lambda: ScramSha256Client("u", "p\u0221"), ValueError),  # stored string
        (lambda: ScramSha256Client("u", "p", authzid=""), ValueError),
        (lambda: ScramSha256Client("u", "p", authzid="a\nb"), ValueError),
        (lambda: ScramSha256Client("u", "p", nonce="a,b"), ValueError),
        (lambda: ScramSha256Server(nonce=""), ValueError),
    ],
)
def test_constructors_validate(make: Callable[[], object], error: type[Exception]) -> None:
    with pytest.raises(error):
        make()


def test_scram_user_names_are_query_strings() -> None:
    # Unassigned code points are allowed in user names (RFC 5802 §5.1).
    client = ScramSha256Client("u\u0221", "p", nonce="n")
    assert client.initial_response() == "n,,n=u\u0221,r=n".encode()


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: Challenge(data="text"), TypeError),  # type: ignore[arg-type]
        (lambda: Success(authcid=b"u"), TypeError),  # type: ignore[arg-type]
        (lambda: Success(authcid="u", authzid=1), TypeError),  # type: ignore[arg-type]
        (lambda: Failure(reason="a\r\nb"), ValueError),
        (lambda: Failure(reason=1), TypeError),  # type: ignore[arg-type]
        (lambda: Failure(reason="r", code=250, enhanced="2.0.0"), ValueError),
        (lambda: Failure(reason="r", code="535"), ValueError),  # type: ignore[arg-type]
        (lambda: Failure(reason="r", code=454, enhanced="5.7.8"), ValueError),
        (lambda: Failure(reason="r", enhanced=None), TypeError),  # type: ignore[arg-type]
        (
            lambda: ScramCredentials(salt=b"", iterations=1, stored_key=b"", server_key=b""),
            ValueError,
        ),
        (
            lambda: ScramCredentials(salt=b"s", iterations=True, stored_key=b"", server_key=b""),
            TypeError,
        ),
        (
            lambda: ScramCredentials(salt=b"s", iterations=0, stored_key=b"", server_key=b""),
            ValueError,
        ),
        (
            lambda: ScramCredentials(salt=b"s", iterations=1, stored_key=b"k", server_key=b"k"),
            ValueError,
        ),
    ],
)
def test_steps_validate(make: Callable[[], object], error: type[Exception]) -> None:
    with pytest.raises(error):
        make()


def test_failure_defaults() -> None:
    failure = Failure(reason="no")
    assert (failure.code, failure.enhanced) == REJECTED
    assert Failure(reason="later", code=454, enhanced="4.7.0").code == 454


# --- fuzzing: garbage only ever ends an attempt or raises SASLError ------------


@settings(max_examples=150, deadline=None)
@given(
    index=st.integers(0, len(ALL_SERVERS) - 1),
    messages=st.lists(st.binary(max_size=80), min_size=1, max_size=4),
    initial=st.booleans(),
)
def test_servers_survive_garbage(index: int, messages: list[bytes], initial: bool) -> None:
    server = ALL_SERVERS[index]()
    step = server.start(messages[0] if initial else None)
    for message in messages[1:] if initial else messages:
        if not isinstance(step, Challenge):
            break
        step = server.respond(message)
    assert isinstance(
        step, (Challenge, Failure, CheckPassword, LookupPassword, LookupScram, CheckToken)
    )
    if isinstance(step, Failure):
        assert server.done and step.code in (500, 501, 535)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(sorted(CLIENT_MECHANISMS)),
    challenges=st.lists(st.binary(max_size=80), min_size=1, max_size=4),
)
def test_clients_survive_garbage(name: str, challenges: list[bytes]) -> None:
    client = _make_client(name)
    client.initial_response()
    for challenge in challenges:
        try:
            client.respond(challenge)
        except SASLError:
            return
    # No forged exchange can make SCRAM complete without the server's key.
    if name == "SCRAM-SHA-256":
        assert not client.complete


def _make_client(name: str) -> ClientMechanism:
    if name in ("XOAUTH2", "OAUTHBEARER"):
        return CLIENT_MECHANISMS[name]("user", "t")  # type: ignore[call-arg]
    return CLIENT_MECHANISMS[name]("user", "pencil")  # type: ignore[call-arg]


# --- registries and choosing a mechanism ---------------------------------------


def test_registries() -> None:
    assert list(CLIENT_MECHANISMS) == [
        "SCRAM-SHA-256",
        "CRAM-MD5",
        "OAUTHBEARER",
        "XOAUTH2",
        "PLAIN",
        "LOGIN",
    ]
    assert set(SERVER_MECHANISMS) == set(CLIENT_MECHANISMS)
    for name, cls in CLIENT_MECHANISMS.items():
        assert cls.name == name
        assert cls.plaintext == SERVER_MECHANISMS[name].plaintext
    assert {n for n, c in CLIENT_MECHANISMS.items() if c.plaintext} == {
        "PLAIN",
        "LOGIN",
        "XOAUTH2",
        "OAUTHBEARER",
    }


EVERYTHING = ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "XOAUTH2", "OAUTHBEARER"]


@pytest.mark.parametrize(
    ("offered", "kwargs", "expected"),
    [
        (EVERYTHING, {"password": "p"}, ScramSha256Client),
        (["plain", "login", "cram-md5"], {"password": "p"}, CramMD5Client),
        (["PLAIN", "LOGIN"], {"password": "p"}, None),
        (["PLAIN", "LOGIN"], {"password": "p", "allow_plaintext": True}, PlainClient),
        (["LOGIN"], {"password": "p", "allow_plaintext": True}, LoginClient),
        ("LOGIN Plain", {"password": "p", "allow_plaintext": True}, PlainClient),
        (EVERYTHING, {"token": "t", "allow_plaintext": True}, OAuthBearerClient),
        (["XOAUTH2", "PLAIN"], {"token": "t", "allow_plaintext": True}, XOAuth2Client),
        (EVERYTHING, {"token": "t"}, None),  # bearer tokens need TLS too
        (["XOAUTH2"], {"password": "p", "allow_plaintext": True}, None),
        (["SCRAM-SHA-256"], {"token": "t", "allow_plaintext": True}, None),
        (["GSSAPI", "NTLM"], {"password": "p", "allow_plaintext": True}, None),
        ([], {"password": "p"}, None),
        (EVERYTHING, {}, None),
        (EVERYTHING, {"password": "p", "token": "t", "allow_plaintext": True}, ScramSha256Client),
        # SASLprep refuses the password for SCRAM: fall back to CRAM-MD5.
        (EVERYTHING, {"password": "p\u0007"}, CramMD5Client),
        # An empty user name fits no password mechanism.
        (EVERYTHING, {"password": "p", "username": "", "allow_plaintext": True}, None),
    ],
)
def test_choose_client_mechanism(
    offered: list[str] | str, kwargs: dict[str, object], expected: type[ClientMechanism] | None
) -> None:
    arguments: dict[str, object] = {"username": "user", **kwargs}
    chosen = choose_client_mechanism(offered, **arguments)  # type: ignore[arg-type]
    if expected is None:
        assert chosen is None
    else:
        assert type(chosen) is expected


def test_choose_client_mechanism_passes_host_and_port() -> None:
    chosen = choose_client_mechanism(
        ["OAUTHBEARER"],
        username="user@example.com",
        token=RFC_TOKEN,
        allow_plaintext=True,
        host="server.example.com",
        port=143,
    )
    assert chosen is not None
    assert chosen.initial_response() == OAUTHBEARER_INITIAL


def test_chosen_mechanism_authenticates() -> None:
    client = choose_client_mechanism(EVERYTHING, username="user", password="pencil")
    assert client is not None
    server = SERVER_MECHANISMS[client.name]()
    assert drive(client, server, Store()) == Success(authcid="user", authzid=None)
