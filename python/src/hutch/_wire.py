"""A lean HTTP/1.1 client for the SDK's hot path: kept connections, one write per request.

The SDK's most frequent calls (``commands.run``, ``interpreter.execute`` and the other JSON
calls) are small requests with small answers, where httpx's layers (request and response
models, its connection pool's bookkeeping, anyio's stream wrappers, a write for the head and
another for the body) cost more client CPU than the server spends answering: about a
millisecond a call, which bounds what one event loop can drive. This module speaks just what
those calls need over plain ``http://``: a request written in one ``send``, an answer read
with a small parser (``Content-Length``, chunked, or until close) and a pool of kept
connections, blocking (:class:`Lane`) and for event loops (:class:`AsyncLane`). Both faces share
:func:`encode_request` and :class:`ResponseParser`, which do no I/O. Anything else (TLS, file
uploads, streamed bodies, WebSockets) stays on httpx.

A kept connection the server has closed while idle is noticed before it is used (it reads as
at end of file) and dropped; when the server closes one just as a request goes out and no
byte of the answer came, an idempotent request is sent again on a fresh connection, as httpx
does.
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
from dataclasses import dataclass
from typing import AsyncIterator, Dict, Iterator, List, Mapping, Optional, Tuple

__all__ = ["Head", "ResponseParser", "encode_request", "Lane", "AsyncLane", "WireError"]

READ_SIZE = 65536
"""Bytes asked of the socket per read."""
HEAD_MAX = 64 * 1024
"""The longest response head accepted."""


class WireError(Exception):
    """The connection failed or the answer was not HTTP/1.1. ``answered`` tells whether any
    byte of the answer had come (a request is only sent again when none had)."""

    def __init__(self, message: str, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


class WireTimeout(WireError):
    """No answer (or no connection) in time."""


@dataclass
class Head:
    """A response's status and headers (names in lower case; a repeated header keeps its
    last value)."""

    status: int
    headers: Dict[str, str]


def encode_request(
    method: str, target: str, host: str, headers: Mapping[str, str], body: Optional[bytes]
) -> bytes:
    """The whole request as bytes: request line, headers, ``Content-Length`` when there is a
    body, and the body."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


class ResponseParser:
    """Reads one response from the bytes fed to it, without I/O.

    :meth:`feed` takes what the socket gave; :attr:`head` is set once the head is complete;
    :meth:`take_body` returns the body bytes decoded so far (chunks unwrapped); :attr:`done`
    tells that the answer is complete and :attr:`reusable` that the connection may carry
    another request.
    """

    def __init__(self, method: str) -> None:
        self._method = method
        self._buffer = bytearray()
        self._body: List[bytes] = []
        self.head: Optional[Head] = None
        self.done = False
        self.reusable = False
        self._remaining = 0  # body bytes left (length mode) or in the current chunk
        self._mode = ""  # "length", "chunked" or "close"
        self._chunk_state = "size"  # size, data, data-end, trailers

    def feed(self, data: bytes) -> None:
        """Adds bytes read from the connection; ``b""`` is the end of the connection."""
        if not data:
            self._end_of_connection()
            return
        self._buffer += data
        if self.head is None:
            self._parse_head()
        if self.head is not None and not self.done:
            self._parse_body()

    def take_body(self) -> bytes:
        """The body bytes parsed since the last call."""
        body = b"".join(self._body)
        self._body.clear()
        return body

    def _end_of_connection(self) -> None:
        if self.done:
            return
        if self.head is not None and self._mode == "close":
            self.done = True
            return
        answered = bool(self._buffer) or self.head is not None
        raise WireError("the server closed the connection before the answer's end", answered)

    def _parse_head(self) -> None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or end > HEAD_MAX:
            if len(self._buffer) > HEAD_MAX:
                raise WireError("the answer's head is too long", answered=True)
            return
        lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise WireError(f"not an HTTP/1.1 answer: {lines[0][:80]!r}", answered=True)
        status = int(parts[1])
        headers: Dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            # An interim answer (100 Continue): the real one follows.
            self._parse_head()
            return
        self.head = Head(status, headers)
        closing = "close" in headers.get("connection", "").lower() or parts[0] == "HTTP/1.0"
        if self._method == "HEAD" or status in (204, 304):
            self._mode, self._remaining = "length", 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._mode = "chunked"
        elif "content-length" in headers:
            try:
                self._remaining = int(headers["content-length"])
            except ValueError:
                raise WireError("a malformed Content-Length", answered=True) from None
            self._mode = "length"
        else:
            self._mode = "close"
            closing = True
        self.reusable = not closing

    def _parse_body(self) -> None:
        if self._mode == "length":
            take = min(self._remaining, len(self._buffer))
            if take:
                self._body.append(bytes(self._buffer[:take]))
                del self._buffer[:take]
                self._remaining -= take
            if self._remaining == 0:
                self.done = True
                self.reusable = self.reusable and not self._buffer
        elif self._mode == "close":
            if self._buffer:
                self._body.append(bytes(self._buffer))
                self._buffer.clear()
        else:
            self._parse_chunks()

    def _parse_chunks(self) -> None:
        buffer = self._buffer
        while not self.done:
            if self._chunk_state == "size":
                end = buffer.find(b"\r\n")
                if end < 0:
                    return
                size = bytes(buffer[:end]).split(b";", 1)[0].strip()
                del buffer[: end + 2]
                try:
                    self._remaining = int(size, 16)
                except ValueError:
                    raise WireError("a malformed chunk size", answered=True) from None
                self._chunk_state = "data" if self._remaining else "trailers"
            elif self._chunk_state == "data":
                take = min(self._remaining, len(buffer))
                if not take:
                    return
                self._body.append(bytes(buffer[:take]))
                del buffer[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._chunk_state = "data-end"
            elif self._chunk_state == "data-end":
                if len(buffer) < 2:
                    return
                del buffer[:2]
                self._chunk_state = "size"
            else:  # trailers: lines up to an empty one
                end = buffer.find(b"\r\n")
                if end < 0:
                    return
                del buffer[: end + 2]
                if end == 0:
                    self.done = True
                    self.reusable = self.reusable and not buffer


class LineSplitter:
    """Splits body bytes into lines (without their ``\\n``), across reads."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> List[bytes]:
        """The lines completed by ``data``."""
        if not data:
            return []
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        return lines

    def finish(self) -> List[bytes]:
        """The last line, if the body did not end with a newline."""
        rest, self._partial = self._partial, b""
        return [rest] if rest.strip() else []


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle kept connection has been closed by the server (or has unexpected
    bytes waiting, which makes it as unusable)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class Lane:
    """Kept HTTP/1.1 connections to one ``host:port``, for blocking calls (thread-safe: each
    exchange has a connection of its own)."""

    def __init__(self, host: str, port: int, host_header: str) -> None:
        self._address = (host, port)
        self._host_header = host_header
        self._idle: List[socket.socket] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        """Closes the idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()

    def _connection(self, connect_timeout: Optional[float]) -> Tuple[socket.socket, bool]:
        while True:
            with self._lock:
                sock = self._idle.pop() if self._idle else None
            if sock is None:
                break
            if _closed_by_peer(sock):
                sock.close()
                continue
            return sock, True
        try:
            sock = socket.create_connection(self._address, timeout=connect_timeout)
        except socket.timeout as e:
            raise WireTimeout(f"connecting: {e}") from e
        except OSError as e:
            raise WireError(f"connecting: {e}") from e
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, False

    def exchange(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: Optional[bytes],
        connect_timeout: Optional[float],
        read_timeout: Optional[float],
        retries: int,
    ) -> Iterator["Head | bytes"]:
        """Sends a request; yields its :class:`Head`, then its body as it comes (``bytes``)."""
        request = encode_request(method, target, self._host_header, headers, body)
        while True:
            sock, reused = self._connection(connect_timeout)
            parser = ResponseParser(method)
            try:
                sock.settimeout(connect_timeout)
                sock.sendall(request)
                sock.settimeout(read_timeout)
                while parser.head is None:
                    parser.feed(sock.recv(READ_SIZE))
            except (WireError, OSError) as e:
                sock.close()
                answered = isinstance(e, WireError) and e.answered
                if reused and not answered and retries > 0:
                    retries -= 1
                    continue
                if isinstance(e, socket.timeout):
                    raise WireTimeout(f"reading the answer: {e}") from e
                raise e if isinstance(e, WireError) else WireError(str(e)) from e
            break
        try:
            yield parser.head
            while True:
                body = parser.take_body()
                if body:
                    yield body
                if parser.done:
                    break
                parser.feed(sock.recv(READ_SIZE))
        except socket.timeout as e:
            sock.close()
            raise WireTimeout(f"reading the answer: {e}") from e
        except OSError as e:
            sock.close()
            raise WireError(str(e), answered=True) from e
        except BaseException:
            sock.close()  # the caller stopped reading: the rest of the answer is unread
            raise
        if parser.reusable:
            with self._lock:
                self._idle.append(sock)
        else:
            sock.close()


_Stream = Tuple[asyncio.StreamReader, asyncio.StreamWriter]
_timeout_scope = getattr(asyncio, "timeout", None)  # Python 3.11+: no task per read


async def _read(reader: asyncio.StreamReader, timeout: Optional[float]) -> bytes:
    """One read, within ``timeout`` seconds (``None``: no bound)."""
    if timeout is None:
        return await reader.read(READ_SIZE)
    if _timeout_scope is not None:
        async with _timeout_scope(timeout):
            return await reader.read(READ_SIZE)
    return await asyncio.wait_for(reader.read(READ_SIZE), timeout)


class AsyncLane:
    """Kept HTTP/1.1 connections to one ``host:port`` for one event loop at a time (a client
    used from another loop, as successive ``asyncio.run`` calls do, starts afresh)."""

    def __init__(self, host: str, port: int, host_header: str, max_connections: int) -> None:
        self._address = (host, port)
        self._host_header = host_header
        self._max = max_connections
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._idle: List[_Stream] = []
        self._slots: Optional[asyncio.Semaphore] = None

    async def close(self) -> None:
        """Closes the idle connections."""
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()

    def _bind(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._slots is None:
            # Connections and the semaphore of another (perhaps closed) loop cannot be used.
            self._loop, self._idle, self._slots = loop, [], asyncio.Semaphore(self._max)
        return self._slots

    async def _connection(self, connect_timeout: Optional[float]) -> Tuple[_Stream, bool]:
        while self._idle:
            reader, writer = self._idle.pop()
            if reader.at_eof() or writer.is_closing() or reader._buffer:  # type: ignore[attr-defined]
                writer.close()
                continue
            return (reader, writer), True
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(*self._address, limit=READ_SIZE), connect_timeout
            )
        except asyncio.TimeoutError as e:
            raise WireTimeout("connecting: timed out") from e
        except OSError as e:
            raise WireError(f"connecting: {e}") from e
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return (reader, writer), False

    async def exchange(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: Optional[bytes],
        connect_timeout: Optional[float],
        read_timeout: Optional[float],
        retries: int,
    ) -> AsyncIterator["Head | bytes"]:
        """:meth:`Lane.exchange` for an event loop."""
        request = encode_request(method, target, self._host_header, headers, body)
        async with self._bind():
            while True:
                (reader, writer), reused = await self._connection(connect_timeout)
                parser = ResponseParser(method)
                try:
                    writer.write(request)
                    while parser.head is None:
                        parser.feed(await _read(reader, read_timeout))
                except (WireError, OSError, asyncio.TimeoutError) as e:
                    writer.close()
                    answered = isinstance(e, WireError) and e.answered
                    if reused and not answered and retries > 0:
                        retries -= 1
                        continue
                    if isinstance(e, asyncio.TimeoutError):
                        raise WireTimeout("reading the answer: timed out") from e
                    raise e if isinstance(e, WireError) else WireError(str(e)) from e
                except BaseException:
                    writer.close()
                    raise
                break
            try:
                yield parser.head
                while True:
                    chunk = parser.take_body()
                    if chunk:
                        yield chunk
                    if parser.done:
                        break
                    parser.feed(await _read(reader, read_timeout))
            except asyncio.TimeoutError as e:
                writer.close()
                raise WireTimeout("reading the answer: timed out") from e
            except OSError as e:
                writer.close()
                raise WireError(str(e), answered=True) from e
            except BaseException:
                writer.close()
                raise
            if parser.reusable:
                self._idle.append((reader, writer))
            else:
                writer.close()
