"""A server with a custom handler: accept mail for one domain only.

    python3 examples/custom_handler_server.py --port 8025

The handler refuses recipients outside ``example.org`` with 550, refuses
messages without a Subject with 554, and prints what it accepts.  The
protocol itself (grammar, sequence, limits) is the library's business.
"""

from __future__ import annotations

import argparse
from email.parser import BytesHeaderParser

from smtpproto import Rcpt, Reply
from smtpproto.flows import Envelope, Handler, Reject, Session
from smtpproto.sync import SMTPServer


class OneDomainHandler(Handler):
    """Accept mail for ``@example.org`` recipients; remember what arrived."""

    def __init__(self, domain: str = "example.org") -> None:
        self.domain = domain
        self.received: list[Envelope] = []

    def rcpt(self, session: Session, rcpt: Rcpt) -> Reply | None:
        if not rcpt.forward_path.lower().endswith("@" + self.domain):
            return Reply(code=550, text=("No such user here",), enhanced="5.1.1")
        return None  # the usual 250

    def message(self, session: Session, envelope: Envelope) -> Reply | None:
        assert envelope.content is not None
        headers = BytesHeaderParser().parsebytes(envelope.content)
        if headers["Subject"] is None:
            raise Reject(Reply(code=554, text=("A Subject header is required",), enhanced="5.6.0"))
        self.received.append(envelope)
        print(f"accepted from <{envelope.sender}> for {envelope.recipient_addresses}: {headers['Subject']}")
        return Reply(code=250, text=(f"Queued as {len(self.received)}",), enhanced="2.0.0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    args = parser.parse_args()
    server = SMTPServer(OneDomainHandler(), args.host, args.port)
    print("listening on {}:{}".format(*server.address[:2]), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
