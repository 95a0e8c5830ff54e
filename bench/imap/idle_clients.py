"""Many IMAP clients in IDLE, in a process of their own (so their memory is not the server's).

    python idle_clients.py --port P --count N --user U --cafile F --server-name NAME
    (password in the environment variable BENCH_IMAP_PASSWORD)

Each connection: implicit TLS (chain verified against ``--cafile``), LOGIN, SELECT INBOX,
IDLE, and then nothing but reading what the server sends. ``--concurrency`` connections are
being set up at a time. Talks to the parent over its standard streams, one line each:

    stdout  progress <opened> <failed>        every 100 connections
    stdout  ready <opened> <failed> <seconds> all set up (or failed); then waits
    stdin   status   ->  stdout  alive <n>   connections still open (no EOF from the server)
    stdin   close (or end of input)          DONE, LOGOUT, close everything, exit
    stdout  error <text>                     the first failures (at most 5)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import ssl
import sys
import time
from dataclasses import dataclass, field


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--server-name", required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=300.0, help="per connection set-up")
    return parser.parse_args()


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, wanted), hard))


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Client:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    task: asyncio.Task[None] | None = None
    closed: bool = False


@dataclass
class Pool:
    args: argparse.Namespace
    password: str
    tls: ssl.SSLContext
    clients: list[Client] = field(default_factory=list)
    failed: int = 0
    errors: int = 0

    async def until(self, reader: asyncio.StreamReader, tag: bytes) -> bytes:
        """Lines up to the one starting with ``tag``; that line."""
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("closed by the server")
            if line.startswith(tag):
                return line

    async def open_one(self) -> Client:
        reader, writer = await asyncio.open_connection(
            self.args.host,
            self.args.port,
            ssl=self.tls,
            server_hostname=self.args.server_name,
            limit=1 << 20,
        )
        try:
            await self.until(reader, b"* OK")
            writer.write(f"a LOGIN {quoted(self.args.user)} {quoted(self.password)}\r\n".encode())
            if not (await self.until(reader, b"a ")).startswith(b"a OK"):
                raise ConnectionError("LOGIN refused")
            writer.write(b"b SELECT INBOX\r\n")
            if not (await self.until(reader, b"b ")).startswith(b"b OK"):
                raise ConnectionError("SELECT refused")
            writer.write(b"c IDLE\r\n")
            await self.until(reader, b"+")
        except BaseException:
            writer.close()
            raise
        client = Client(reader, writer)
        client.task = asyncio.create_task(self.drain(client))
        return client

    async def drain(self, client: Client) -> None:
        """Read (and forget) what the server sends in IDLE; note when it hangs up."""
        try:
            while await client.reader.readline():
                pass
        except (OSError, ssl.SSLError):
            pass
        client.closed = True

    async def set_up(self) -> None:
        slots = asyncio.Semaphore(self.args.concurrency)

        async def one() -> None:
            async with slots:
                try:
                    client = await asyncio.wait_for(self.open_one(), self.args.timeout)
                except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as error:
                    self.failed += 1
                    if self.errors < 5:
                        self.errors += 1
                        say(f"error {type(error).__name__}: {error}")
                    return
                self.clients.append(client)
                done = len(self.clients) + self.failed
                if done % 100 == 0:
                    say(f"progress {len(self.clients)} {self.failed}")

        await asyncio.gather(*(one() for _ in range(self.args.count)))

    async def close_all(self) -> None:
        for client in self.clients:
            if not client.closed:
                client.writer.write(b"DONE\r\nd LOGOUT\r\n")
        await asyncio.sleep(0.5)
        for client in self.clients:
            if client.task is not None:
                client.task.cancel()
            client.writer.close()


async def main() -> int:
    args = arguments()
    raise_nofile(args.count + 256)
    tls = ssl.create_default_context(cafile=args.cafile)
    pool = Pool(args, os.environ.get("BENCH_IMAP_PASSWORD", ""), tls)
    started = time.monotonic()
    await pool.set_up()
    say(f"ready {len(pool.clients)} {pool.failed} {time.monotonic() - started:.1f}")
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.strip()
        if command == "status":
            say(f"alive {sum(not c.closed for c in pool.clients)}")
        elif command == "close" or not line:
            break
    await pool.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
