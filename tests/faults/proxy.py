"""A TCP proxy on 127.0.0.1 that the fault suite controls: cut a link, lose replies.

Put between a hub and its nats-server, or between two countries' servers
(the dialing server's config names the proxy's port instead of the peer's
leaf port), it forwards bytes both ways until told otherwise:

- :meth:`TcpProxy.cut` closes every connection and stops listening, so new
  connections are refused, as when a border link goes down;
  :meth:`TcpProxy.heal` listens again on the same port.
- :meth:`TcpProxy.drop_replies` discards what the server sends back on every
  open connection (the client's requests still reach the server) for a
  while, then resets those connections: a TCP stream that lost bytes cannot
  go on, so a real network ends it the same way after its retransmissions
  gave up. A publish stored by the server whose acknowledgement never came
  back is exactly what this produces.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

CHUNK = 64 * 1024


@dataclass(eq=False)
class _Pipe:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    lost_bytes: int = 0

    def close(self) -> None:
        for writer in (self.client, self.server):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class TcpProxy:
    """127.0.0.1:``port`` → ``target_host``:``target_port``, under the suite's control."""

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self._server: asyncio.Server | None = None
        self._pipes: set[_Pipe] = set()
        self._dropping = False
        self.connections = 0
        """Connections accepted so far (a client reconnecting through us adds one)."""

    def __repr__(self) -> str:
        return f"TcpProxy(:{self.port} → {self.target[0]}:{self.target[1]})"

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self.cut()

    @property
    def open_connections(self) -> int:
        return len(self._pipes)

    async def cut(self) -> None:
        """Refuse new connections and end the open ones."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=2.0)
        for pipe in list(self._pipes):
            pipe.close()
        self._pipes.clear()

    async def heal(self) -> None:
        """Listen again on the same port."""
        await self.start()

    async def drop_replies(self, seconds: float) -> int:
        """Lose everything the server sends for ``seconds``, then reset the connections
        that lost bytes; returns how many bytes were lost."""
        self._dropping = True
        try:
            await asyncio.sleep(seconds)
        finally:
            self._dropping = False
        lost = 0
        for pipe in list(self._pipes):
            if pipe.lost_bytes:
                lost += pipe.lost_bytes
                pipe.close()
                self._pipes.discard(pipe)
        return lost

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.target), timeout=2.0
            )
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        self.connections += 1
        pipe = _Pipe(writer, up_writer)
        self._pipes.add(pipe)
        pipe.tasks = [
            asyncio.create_task(self._copy(reader, up_writer, pipe, replies=False)),
            asyncio.create_task(self._copy(up_reader, writer, pipe, replies=True)),
        ]

    async def _copy(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pipe: _Pipe,
        *,
        replies: bool,
    ) -> None:
        try:
            while data := await src.read(CHUNK):
                if replies and self._dropping:
                    pipe.lost_bytes += len(data)
                    continue
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            pipe.close()
            self._pipes.discard(pipe)
