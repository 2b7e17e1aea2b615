"""An LMTP delivery agent: one Maildir per recipient, one reply each.

    python3 examples/lmtp_delivery_agent.py --socket /tmp/lmtp.sock --root /tmp/mail

An MTA (Postfix's ``lmtp:unix:/tmp/lmtp.sock``, say) hands it messages;
after the end of data it answers once per recipient (RFC 2033 §4.2), so a
full or unknown mailbox fails alone while the others are delivered.
"""

from __future__ import annotations

import argparse
import mailbox
from pathlib import Path

from smtpproto import Reply, ServerConfig
from smtpproto.flows import Envelope, Handler, Session
from smtpproto.sync import SMTPServer


class MaildirAgent(Handler):
    """Deliver into the Maildir ``ROOT/<local part>/`` of every recipient
    that has one; refuse the others."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def message(self, session: Session, envelope: Envelope) -> list[Reply]:
        assert envelope.content is not None
        replies = []
        for recipient in envelope.recipient_addresses:
            local = recipient.rpartition("@")[0].lower()
            folder = self.root / local
            if not local.isalnum() or not folder.is_dir():
                replies.append(Reply(code=550, text=(f"<{recipient}> no such mailbox",), enhanced="5.1.1"))
                continue
            mailbox.Maildir(folder, create=False).add(envelope.content)
            replies.append(Reply(code=250, text=(f"<{recipient}> delivered",), enhanced="2.0.0"))
        return replies


def serve(socket_path: str, root: Path) -> SMTPServer:
    """The LMTP server, bound to *socket_path* (call serve_forever())."""
    return SMTPServer(MaildirAgent(root), config=ServerConfig(lmtp=True), unix_path=socket_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args()
    server = serve(args.socket, args.root)
    print(f"listening on {args.socket}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
