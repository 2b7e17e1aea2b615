"""An asyncio server whose hooks are coroutines.

    python3 examples/async_server.py --port 8025

The ``rcpt`` hook looks the recipient up in an (imagined) asynchronous
directory, and ``message`` hands the message to an asynchronous queue;
neither blocks the event loop.
"""

from __future__ import annotations

import argparse
import asyncio

from smtpproto import Rcpt, Reply
from smtpproto.asyncio import AsyncSMTPServer
from smtpproto.flows import Envelope, Handler, Session


class QueueingHandler(Handler):
    """Known recipients only; accepted messages go to an asyncio queue."""

    def __init__(self, users: set[str]) -> None:
        self.users = users
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue()

    async def rcpt(self, session: Session, rcpt: Rcpt) -> Reply | None:
        await asyncio.sleep(0)  # a directory lookup would await here
        if rcpt.forward_path.lower() not in self.users:
            return Reply(code=550, text=("No such user",), enhanced="5.1.1")
        return None

    async def message(self, session: Session, envelope: Envelope) -> Reply | None:
        await self.queue.put(envelope)
        return Reply(code=250, text=(f"Queued ({self.queue.qsize()} waiting)",), enhanced="2.0.0")


async def main(host: str, port: int) -> None:
    server = AsyncSMTPServer(QueueingHandler({"bob@example.org"}), host, port)
    await server.start()
    print("listening on {}:{}".format(*server.address[:2]), flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
