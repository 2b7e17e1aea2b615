"""SMTP transcripts: a small text format for server conformance, and its runner.

Theory of operation
-------------------
A transcript (``tests/transcripts/*.txt``, described in that directory's
``README.rst``) is one SMTP conversation written as the client sees it:
header lines (``title:``, ``protocol:``, ``rfc:``, ``tags:``, ``policy:``,
``<target>-differs:``, ``xfail:``), then steps, one per line::

    C: EHLO client.example        send the text and CRLF
    C> MAIL FROM:<a@b>\\n          send the bytes as written (escapes), no CRLF added
    S: 250[- ].*                  read one reply; every line must match
    S has: 250[- ]PIPELINING      a line of the last reply matches
    S lacks: 250[- ]STARTTLS      no line of the last reply matches
    X: starttls                   TLS handshake on the socket
    X: close                      the server must close the connection

:func:`parse` turns a file into a :class:`Transcript` and rejects anything
it does not understand (unknown header, step, tag or variable), so a typo
fails the suite instead of silently testing less.  :func:`run` plays one
transcript against one :class:`Target` over a real loopback socket: every
read has a timeout, a reply is read line by line and checked against the
reply grammar of RFC 5321 §4.2 (CRLF endings, the same code on every line,
at most 512 octets a line) before its patterns are applied, and a mismatch raises
:class:`TranscriptFailure` carrying the conversation so far.

One transcript serves several servers.  A step may be restricted to some
targets (``S[postfix]: ...``, ``C[ours]: ...``): our three backends are the
family ``ours``, the real MTAs are ``postfix`` and ``exim``.  Values that
differ per server (credentials, the SIZE limit) are variables
(``${PLAIN_AUTH}``), filled in from :attr:`Target.variables`;
``${CRAM_MD5}`` is computed from the last 334 challenge read, ``${N}`` is
the line number inside a repeated step, and ``${x*600}`` is ``x`` six
hundred times.

Run transcripts by hand against any server with
``python3 tests/transcript.py --port 2525 tests/transcripts/*.txt``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import re
import socket
import ssl
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DIRECTORY",
    "FAMILIES",
    "KNOWN_TAGS",
    "Step",
    "Target",
    "Transcript",
    "TranscriptError",
    "TranscriptFailure",
    "load_all",
    "parse",
    "parse_text",
    "run",
    "standard_variables",
]

#: Where the transcripts live.
DIRECTORY = Path(__file__).resolve().parent / "transcripts"

#: Target families a step may be restricted to, and the names of our backends.
FAMILIES = ("ours", "postfix", "exim")
BACKENDS = ("sync", "asyncio", "trio")

#: Tags a transcript may carry (what it needs or exercises).
KNOWN_TAGS = frozenset(
    {
        "tls",  # needs STARTTLS and the test certificate
        "auth",  # needs AUTH and the target's credentials
        "pipelining",  # sends several commands in one write
        "chunking",  # uses BDAT
        "smtputf8",
        "8bitmime",
        "size",
        "dsn",
        "enhancedstatuscodes",
        "smuggling",
        "slow",  # sends megabytes
    }
)

#: Variables every target provides (see :func:`standard_variables`).
STANDARD_VARIABLES = (
    "USER",
    "PASSWORD",
    "PLAIN_AUTH",
    "PLAIN_BAD",
    "LOGIN_USER",
    "LOGIN_PASSWORD",
    "LOGIN_BAD",
    "MAX_SIZE",
    "OVER_SIZE",
    "OVERSIZE_LINES",
)
#: Variables the runner computes while it runs.
DYNAMIC_VARIABLES = ("CRAM_MD5", "CRAM_MD5_BAD", "N")

_HEADER_RE = re.compile(
    r"(?P<key>title|protocol|rfc|tags|policy|xfail|[a-z]+-differs):(?: (?P<value>.*))?"
)
_STEP_RE = re.compile(
    r"(?P<kind>[CSX])"
    r"(?:\[(?P<only>[a-z]+(?:,[a-z]+)*)\])?"
    r"(?:\*(?P<count>[0-9]+|\$\{[A-Z_]+\}))?"
    r"(?: (?P<word>has|lacks))?"
    r"(?P<sep>[:>])(?: (?P<text>.*))?"
)
_VARIABLE_RE = re.compile(r"\$\{(?:(?P<name>[A-Z_0-9]+)|(?P<chars>[^*${}]+)\*(?P<times>[0-9]+))\}")
_ESCAPE_RE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[rnt0\\])")
_ESCAPES = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\x00", b"\\": b"\\"}
#: RFC 5321 §4.2: Reply-code [ ("-" / SP) textstring ], CRLF-terminated.
_REPLY_LINE_RE = re.compile(rb"([2-5][0-9][0-9])(?:([ -])(.*))?", re.DOTALL)
#: RFC 5321 §4.5.3.1.5: "The maximum total length of a reply line including
#: the reply code and the <CRLF> is 512 octets."  Longer lines fail.
REPLY_LINE_LIMIT = 512
#: Octets the runner buffers while looking for a line end.
MAX_REPLY_LINE = 4096
#: Octets handed to one ``sendall`` (its timeout covers the whole call).
SEND_BLOCK = 1 << 20


class TranscriptError(ValueError):
    """A transcript file that does not follow the format."""


class TranscriptFailure(AssertionError):
    """The server's conversation did not match the transcript."""


@dataclass(frozen=True)
class Step:
    """One step of a transcript.

    ``kind`` is ``send`` (``C:``), ``raw`` (``C>``), ``expect`` (``S:``),
    ``has`` / ``lacks`` (``S has:`` / ``S lacks:``), ``starttls`` or
    ``close`` (``X:``).
    """

    kind: str
    text: str
    lineno: int
    #: How many times (``C*N`` / ``S*N``): a number or a ``${VARIABLE}``.
    count: str = "1"
    #: Targets (families or backend names) the step is for; empty: all.
    only: frozenset[str] = frozenset()



@dataclass(frozen=True)
class Transcript:
    """A parsed transcript file."""

    #: The file name without ``.txt``: what the transcript shows.
    name: str
    path: Path
    #: One sentence: what the conversation shows.
    title: str
    #: PROTOCOL.md sections covered, e.g. ``("§1 Order", "§3.1 Inbound smuggling")``.
    protocol: tuple[str, ...]
    #: RFC sections the rule comes from, e.g. ``("RFC 5321 §4.1.4",)``.
    rfc: tuple[str, ...]
    tags: frozenset[str]
    #: Why the transcript depends on our configuration (it then runs against
    #: our backends only), or None.
    policy: str | None
    #: Target family -> why that server answers otherwise (its ``[family]`` steps).
    differs: Mapping[str, str]
    #: Target (family or backend) -> why the transcript is expected to fail there.
    xfail: Mapping[str, str]
    steps: tuple[Step, ...]

    @property
    def shared(self) -> bool:
        """True when the transcript runs against the real MTAs too."""
        return self.policy is None

    @property
    def section(self) -> str:
        """The PROTOCOL.md section (``"1"``, ``"2"`` or ``"3"``) of the first
        item covered: where the documentation lists the transcript."""
        return self.protocol[0][1:].split(" ")[0].split(".")[0]

    def plays(self, step: Step, target: Target) -> bool:
        """True when *target* plays *step*.

        Unrestricted steps are for everyone.  ``[ours]`` steps say what
        PROTOCOL.md asks for: our backends play them, and so does a real
        MTA that has no ``[family]`` steps of its own in this transcript.
        """
        only = step.only
        if not only or target.family in only or target.name in only:
            return True
        own = any(target.family in other.only for other in self.steps)
        return target.family != "ours" and not own and "ours" in only

    def runs_against(self, family: str) -> bool:
        """True when the transcript is meant to run against *family*.

        Ours always; a real MTA when the transcript does not depend on our
        policy (its differences are written as ``[family]`` steps).
        """
        return family == "ours" or self.shared


# -- parsing --------------------------------------------------------------------


def _check_variables(text: str, where: str, allowed: Iterable[str]) -> None:
    names = set(allowed)
    for match in _VARIABLE_RE.finditer(text):
        name = match.group("name")
        if name is not None and name not in names:
            raise TranscriptError(f"{where}: unknown variable ${{{name}}}")
    stripped = _VARIABLE_RE.sub("", text)
    if "${" in stripped:
        raise TranscriptError(f"{where}: malformed variable in {text!r}")


def parse_text(text: str, path: Path) -> Transcript:
    """Parse the text of a transcript file (see the module docstring)."""
    headers: dict[str, str] = {}
    differs: dict[str, str] = {}
    xfail: dict[str, str] = {}
    steps: list[Step] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        where = f"{path.name}:{lineno}"
        if "\r" in line:
            raise TranscriptError(f"{where}: CR in the file (write \\r in a C> step instead)")
        if not line.strip() or line.startswith("#"):
            continue
        step = _STEP_RE.fullmatch(line)
        if step is None:
            header = _HEADER_RE.fullmatch(line)
            if header is None or steps:
                raise TranscriptError(f"{where}: not a header or a step: {line!r}")
            key, value = header.group("key"), (header.group("value") or "").strip()
            if not value:
                raise TranscriptError(f"{where}: {key}: needs a value")
            if key.endswith("-differs"):
                family = key[: -len("-differs")]
                if family not in FAMILIES[1:]:
                    raise TranscriptError(f"{where}: {key}: unknown target {family!r}")
                differs[family] = value
            elif key == "xfail":
                target, _, reason = value.partition(":")
                names = [name.strip() for name in target.split(",")]
                if not reason.strip() or not all(n in FAMILIES + BACKENDS for n in names):
                    raise TranscriptError(f"{where}: write xfail: <targets>: <reason>")
                for name in names:
                    xfail[name] = reason.strip()
            elif key in headers:
                raise TranscriptError(f"{where}: {key}: given twice")
            else:
                headers[key] = value
            continue
        steps.append(_parse_step(step, lineno, where))
    for key in ("title", "protocol", "rfc"):
        if key not in headers:
            raise TranscriptError(f"{path.name}: the header {key}: is missing")
    if not steps:
        raise TranscriptError(f"{path.name}: no steps")
    protocol = tuple(item.strip() for item in headers["protocol"].split(";"))
    for item in protocol:
        if not re.fullmatch(r"§[1-3](\.[0-9]+)? \S.*", item):
            raise TranscriptError(f"{path.name}: protocol: {item!r} is not '§N Name' of PROTOCOL.md")
    tags = frozenset(headers.get("tags", "").split())
    if tags - KNOWN_TAGS:
        raise TranscriptError(f"{path.name}: unknown tags {sorted(tags - KNOWN_TAGS)}")
    restricted = {name for step in steps for name in step.only}
    if restricted and not differs:
        raise TranscriptError(f"{path.name}: restricted steps need a <target>-differs: reason")
    for family in FAMILIES[1:]:
        if family in restricted and family not in differs:
            raise TranscriptError(f"{path.name}: [{family}] steps need a {family}-differs: reason")
    for family in differs:
        if family not in restricted:
            # A difference is written out as the server's own steps.
            raise TranscriptError(f"{path.name}: {family}-differs: needs [{family}] steps")
    policy = headers.get("policy")
    if policy is not None and differs:
        raise TranscriptError(f"{path.name}: a policy: transcript does not run against the MTAs")
    return Transcript(
        name=path.stem,
        path=path,
        title=headers["title"],
        protocol=protocol,
        rfc=tuple(item.strip() for item in headers["rfc"].split(";")),
        tags=tags,
        policy=policy,
        differs=differs,
        xfail=xfail,
        steps=tuple(steps),
    )


def _parse_step(match: re.Match[str], lineno: int, where: str) -> Step:
    kind_letter, sep, word = match.group("kind"), match.group("sep"), match.group("word")
    text = match.group("text") or ""
    count = match.group("count") or "1"
    only = frozenset(match.group("only").split(",")) if match.group("only") else frozenset()
    if only - set(FAMILIES) - set(BACKENDS):
        raise TranscriptError(f"{where}: unknown target in [{match.group('only')}]")
    allowed: list[str] = [*STANDARD_VARIABLES, "CRAM_MD5", "CRAM_MD5_BAD"]
    if count != "1":
        allowed.append("N")
        _check_variables(count, where, STANDARD_VARIABLES)
    if kind_letter == "C":
        if word is not None:
            raise TranscriptError(f"{where}: 'has'/'lacks' belong to S steps")
        _check_variables(text, where, allowed)
        kind = "send" if sep == ":" else "raw"
        if kind == "raw":
            if not text:
                raise TranscriptError(f"{where}: C> needs bytes to send")
            leftover = _ESCAPE_RE.sub(b"", text.encode("utf-8"))
            if b"\\" in leftover:
                raise TranscriptError(f"{where}: unknown escape (use \\r \\n \\t \\0 \\\\ \\xHH)")
        return Step(kind, text, lineno, count, only)
    if sep != ":":
        raise TranscriptError(f"{where}: only C steps take '>'")
    if kind_letter == "X":
        if word is not None or count != "1" or text not in ("close", "starttls"):
            raise TranscriptError(f"{where}: X: takes 'close' or 'starttls'")
        return Step(text, text, lineno, count, only)
    if not text:
        raise TranscriptError(f"{where}: S: needs a pattern")
    _check_variables(text, where, allowed)
    try:
        re.compile(_VARIABLE_RE.sub("x", text))
    except re.error as exc:
        raise TranscriptError(f"{where}: bad pattern {text!r}: {exc}") from None
    if word is None:
        return Step("expect", text, lineno, count, only)
    if count != "1":
        raise TranscriptError(f"{where}: S {word}: takes no count")
    return Step(word, text, lineno, count, only)


def parse(path: Path) -> Transcript:
    """Parse the transcript file at *path*."""
    return parse_text(path.read_text(encoding="utf-8"), path)


def load_all(directory: Path = DIRECTORY) -> list[Transcript]:
    """Every transcript in *directory*, sorted by name."""
    return [parse(path) for path in sorted(directory.glob("*.txt"))]


# -- running --------------------------------------------------------------------


def standard_variables(user: str, password: str, max_size: int) -> dict[str, str]:
    """The variables of a target whose login is *user* / *password* and
    whose message size limit is *max_size* octets."""

    def b64(data: str) -> str:
        return base64.b64encode(data.encode("utf-8")).decode("ascii")

    return {
        "USER": user,
        "PASSWORD": password,
        # RFC 4616 §2: [authzid] NUL authcid NUL passwd
        "PLAIN_AUTH": b64(f"\0{user}\0{password}"),
        "PLAIN_BAD": b64(f"\0{user}\0not-{password}"),
        "LOGIN_USER": b64(user),
        "LOGIN_PASSWORD": b64(password),
        "LOGIN_BAD": b64(f"not-{password}"),
        "MAX_SIZE": str(max_size),
        "OVER_SIZE": str(max_size + 1),
        # Lines of 1000 octets (998 + CRLF) that make a message over the limit.
        "OVERSIZE_LINES": str(max_size // 1000 + 16),
    }


@dataclass(frozen=True)
class Target:
    """A server to play transcripts against."""

    #: ``sync``, ``asyncio``, ``trio``, ``postfix`` or ``exim``.
    name: str
    #: ``ours``, ``postfix`` or ``exim``: which restricted steps apply.
    family: str
    host: str
    port: int
    #: ``${NAME}`` values (see :func:`standard_variables`).
    variables: Mapping[str, str] = field(default_factory=dict)
    #: Client context for ``X: starttls``; None: TLS steps fail.
    ssl_context: ssl.SSLContext | None = None
    #: The name the server certificate is checked against.
    server_hostname: str = "localhost"
    #: Seconds any single read, write or handshake may take.
    timeout: float = 15.0


class _Conversation:
    """One connection playing one transcript."""

    def __init__(self, transcript: Transcript, target: Target) -> None:
        self.transcript = transcript
        self.target = target
        self.log: list[str] = []
        self.buffer = bytearray()
        self.last_reply: list[str] | None = None
        self.variables = dict(target.variables)
        self.sock: socket.socket = socket.create_connection(
            (target.host, target.port), timeout=target.timeout
        )
        self.closed = False

    # -- helpers ------------------------------------------------------------

    def fail(self, step: Step | None, message: str) -> TranscriptFailure:
        where = f"{self.transcript.path.name}:{step.lineno}" if step else self.transcript.path.name
        tail = "\n".join(self.log[-40:])
        return TranscriptFailure(
            f"{where} [{self.target.name}]: {message}\n--- conversation (last 40 entries) ---\n{tail}"
        )

    def substitute(self, text: str, step: Step, *, pattern: bool = False, n: int | None = None) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group("name")
            if name is None:
                result = match.group("chars") * int(match.group("times"))
            elif name == "N":
                result = str(n)
            elif name in ("CRAM_MD5", "CRAM_MD5_BAD"):
                result = self.cram_md5(step, bad=name == "CRAM_MD5_BAD")
            elif name in self.variables:
                result = self.variables[name]
            else:
                raise self.fail(step, f"the target {self.target.name} has no ${{{name}}}")
            return re.escape(result) if pattern else result

        return _VARIABLE_RE.sub(value, text)

    def cram_md5(self, step: Step, *, bad: bool) -> str:
        # RFC 2195 §2: the response is the user name, a space, and the
        # hex HMAC-MD5 of the challenge keyed with the shared secret.
        reply = self.last_reply
        if not reply or not reply[-1].startswith("334 "):
            raise self.fail(step, "${CRAM_MD5} needs a 334 challenge just before")
        challenge = base64.b64decode(reply[-1][4:].strip())
        secret = self.variables["PASSWORD"] + ("-wrong" if bad else "")
        digest = hmac.new(secret.encode(), challenge, hashlib.md5).hexdigest()
        return base64.b64encode(f"{self.variables['USER']} {digest}".encode()).decode("ascii")

    def count(self, step: Step) -> int:
        return int(self.substitute(step.count, step))

    def send(self, step: Step, data: bytes, shown: str) -> None:
        self.log.append(shown if len(shown) <= 200 else f"{shown[:160]}... ({len(data)} octets)")
        try:
            for start in range(0, len(data), SEND_BLOCK):
                self.sock.sendall(data[start : start + SEND_BLOCK])
        except (TimeoutError, socket.timeout):
            raise self.fail(step, f"could not send within {self.target.timeout} s") from None
        except OSError as exc:
            # The server may close while we still send (a limit it enforces);
            # the steps that follow say whether that was expected.
            self.log.append(f"(sending failed: {exc})")

    def receive(self, step: Step, what: str) -> bool:
        """Read more bytes into the buffer; False at the end of the stream."""
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, socket.timeout):
            raise self.fail(step, f"{what} within {self.target.timeout} s") from None
        except (ConnectionResetError, ssl.SSLEOFError):
            data = b""
        except ssl.SSLError as exc:
            raise self.fail(step, f"TLS error while reading: {exc}") from None
        if not data:
            self.closed = True
            return False
        self.buffer += data
        return True

    def read_line(self, step: Step) -> bytes:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                if end == 0 or self.buffer[end - 1] != 0x0D:
                    raw = bytes(self.buffer[: end + 1])
                    raise self.fail(step, f"reply line ended with a bare LF: {raw!r}")
                line = bytes(self.buffer[: end - 1])
                del self.buffer[: end + 1]
                if len(line) + 2 > REPLY_LINE_LIMIT:
                    self.log.append(f"S: {line[:120]!r}... ({len(line) + 2} octets)")
                    raise self.fail(
                        step,
                        f"reply line of {len(line) + 2} octets: RFC 5321 §4.5.3.1.5 allows "
                        f"{REPLY_LINE_LIMIT} with the CRLF",
                    )
                return line
            if len(self.buffer) > MAX_REPLY_LINE:
                raise self.fail(step, f"reply line longer than {MAX_REPLY_LINE} octets")
            if self.closed or not self.receive(step, f"no reply matching {step.text!r}"):
                rest = f" after {bytes(self.buffer)!r}" if self.buffer else ""
                self.log.append("(connection closed by the server)")
                raise self.fail(step, f"the server closed the connection{rest}; expected {step.text!r}")

    def read_reply(self, step: Step) -> list[str]:
        """One reply, checked against RFC 5321 §4.2 (same code on every line)."""
        lines: list[str] = []
        code: bytes | None = None
        while True:
            raw = self.read_line(step)
            text = raw.decode("utf-8", "surrogateescape")
            self.log.append(f"S: {text}")
            match = _REPLY_LINE_RE.fullmatch(raw)
            if match is None:
                raise self.fail(step, f"malformed reply line {raw!r}")
            if code is not None and match.group(1) != code:
                raise self.fail(step, f"reply code changed inside a multiline reply: {raw!r}")
            code = match.group(1)
            lines.append(text)
            if match.group(2) != b"-":
                self.last_reply = lines
                return lines

    # -- steps --------------------------------------------------------------

    def play(self, step: Step) -> None:
        kind = step.kind
        if kind in ("send", "raw"):
            times = self.count(step)
            texts = [
                self.substitute(step.text, step, n=n if times > 1 else None)
                for n in range(1, times + 1)
            ]
            if kind == "send":
                data = b"".join(text.encode("utf-8") + b"\r\n" for text in texts)
            else:
                data = b"".join(_ESCAPE_RE.sub(_unescape, text.encode("utf-8")) for text in texts)
            prefix = "C:" if kind == "send" else "C>"
            shown = f"{prefix} {texts[0]}" if times == 1 else f"{prefix}*{times} {step.text}"
            self.send(step, data, shown)
        elif kind == "expect":
            for _ in range(self.count(step)):
                lines = self.read_reply(step)
                regex = re.compile(self.substitute(step.text, step, pattern=True))
                for line in lines:
                    if regex.fullmatch(line) is None:
                        raise self.fail(step, f"reply line {line!r} does not match {step.text!r}")
        elif kind in ("has", "lacks"):
            if self.last_reply is None:
                raise self.fail(step, f"S {kind}: with no reply read before")
            regex = re.compile(self.substitute(step.text, step, pattern=True))
            found = [line for line in self.last_reply if regex.fullmatch(line)]
            if kind == "has" and not found:
                raise self.fail(step, f"no line of the last reply matches {step.text!r}")
            if kind == "lacks" and found:
                raise self.fail(step, f"the last reply has {found[0]!r}, matching {step.text!r}")
        elif kind == "starttls":
            self.starttls(step)
        else:
            self.expect_close(step)

    def starttls(self, step: Step) -> None:
        if self.buffer:
            # RFC 3207 §5 / PROTOCOL.md §3.3: nothing may follow the 220
            # before the handshake.
            raise self.fail(step, f"bytes after the 220 to STARTTLS: {bytes(self.buffer)!r}")
        context = self.target.ssl_context
        if context is None:
            raise self.fail(step, f"the target {self.target.name} has no TLS client context")
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=self.target.server_hostname)
        except (ssl.SSLError, OSError) as exc:
            raise self.fail(step, f"TLS handshake failed: {exc}") from None
        assert isinstance(self.sock, ssl.SSLSocket)
        self.log.append(f"X: starttls ({self.sock.version()})")

    def expect_close(self, step: Step) -> None:
        if self.buffer:
            raise self.fail(step, f"expected the server to close, got {bytes(self.buffer)!r}")
        if not self.closed and self.receive(step, "the server did not close"):
            raise self.fail(step, f"expected the server to close, got {bytes(self.buffer)!r}")
        self.log.append("X: close (the server closed the connection)")

    def finish(self) -> None:
        if self.buffer:
            extra = bytes(self.buffer)
            raise self.fail(None, f"the server sent more than the transcript expects: {extra!r}")


def _unescape(match: re.Match[bytes]) -> bytes:
    escape = match.group(1)
    if escape[:1] == b"x":
        return bytes([int(escape[1:], 16)])
    return _ESCAPES[escape]


def run(transcript: Transcript, target: Target) -> list[str]:
    """Play *transcript* against *target*; return the conversation.

    Raises :class:`TranscriptFailure` when the server's replies do not match.
    """
    conversation = _Conversation(transcript, target)
    try:
        for step in transcript.steps:
            if transcript.plays(step, target):
                conversation.play(step)
        conversation.finish()
    finally:
        conversation.sock.close()
    return conversation.log


# -- command line -----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run transcripts against a server given on the command line."""
    parser = argparse.ArgumentParser(description="Play SMTP transcripts against a server.")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--family", default="ours", choices=FAMILIES)
    parser.add_argument("--user", default="test@test.example")
    parser.add_argument("--password", default="secret")
    parser.add_argument("--max-size", type=int, default=52_428_800)
    parser.add_argument("--cafile", help="CA for the STARTTLS steps (default: no verification)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every conversation")
    args = parser.parse_args(argv)
    if args.cafile:
        context = ssl.create_default_context(cafile=args.cafile)
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    target = Target(
        name=args.family,
        family=args.family,
        host=args.host,
        port=args.port,
        variables=standard_variables(args.user, args.password, args.max_size),
        ssl_context=context,
    )
    failed = 0
    for path in args.files:
        transcript = parse(path)
        if not transcript.runs_against(args.family):
            print(f"skip  {transcript.name} (policy: {transcript.policy})")
            continue
        expected = transcript.xfail.get(args.family)
        try:
            log = run(transcript, target)
        except TranscriptFailure as exc:
            if expected is not None:
                print(f"xfail {transcript.name} ({expected})")
                continue
            failed += 1
            print(f"FAIL  {transcript.name}\n{exc}\n")
            continue
        if expected is not None:
            failed += 1
            print(f"XPASS {transcript.name}: remove its xfail ({expected})")
            continue
        print(f"ok    {transcript.name}")
        if args.verbose:
            print("\n".join(f"      {entry}" for entry in log))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
