"""Send one message with the trio client (``pip install 'smtpproto[trio]'``).

    python3 examples/send_trio.py --host 127.0.0.1 --port 8025 --to bob@example.org --no-tls
"""

from __future__ import annotations

import argparse
from email.message import EmailMessage
from functools import partial

import trio  # type: ignore[import-untyped, unused-ignore]

from smtpproto.flows import ClientOptions, SendResult, TLSMode
from smtpproto.trio import TrioSMTPClient


async def send(host: str, port: int, sender: str, recipients: list[str], tls: TLSMode) -> SendResult:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = "Hello from smtpproto"
    message.set_content("Sent with smtpproto.trio.TrioSMTPClient.\n")
    options = ClientOptions(helo_name="client.example", tls=tls, server_hostname=host)
    async with TrioSMTPClient(host, port, options=options) as client:
        return await client.send_message(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--from", dest="sender", default="alice@example.org")
    parser.add_argument("--to", action="append", required=True)
    parser.add_argument("--no-tls", action="store_true")
    args = parser.parse_args()
    tls = TLSMode.NEVER if args.no_tls else TLSMode.OPPORTUNISTIC
    result = trio.run(partial(send, args.host, args.port, args.sender, args.to, tls))
    for recipient, reply in result.replies.items():
        print(f"{recipient}: {reply.code} {reply.enhanced or ''} {reply.message}")


if __name__ == "__main__":
    main()
