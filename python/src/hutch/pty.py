"""Interactive terminals: ``WS /sessions/{id}/pty``, a real controlling terminal, resizable.

``session.pty()`` opens one (a login shell, or ``command``); :class:`Terminal` blocks and
:class:`AsyncTerminal` is its twin for event loops::

    with session.pty(cols=100, rows=30) as term:
        term.write("echo $COLUMNS; exit\\n")
        output = term.read_all()
        print(term.exit_code)

Closing a terminal hangs it up: everything started in it is killed.
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any, AsyncIterator, Dict, Iterator, Optional, Type, Union
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection as AsyncClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from ._ws import decode_frame
from .errors import SandboxOperationError, error_from_frame

__all__ = ["MAX_SIZE", "Terminal", "AsyncTerminal", "pty_path"]

MAX_SIZE = 1000
"""Most columns or rows of a terminal."""


def _check_size(name: str, value: Optional[int]) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        raise ValueError(f"{name} must be an integer from 1 to {MAX_SIZE}, got {value!r}")
    return value


def pty_path(
    session_path: str, cols: Optional[int], rows: Optional[int], command: Optional[str]
) -> str:
    """The path of a terminal with these settings, checked."""
    query: Dict[str, Any] = {}
    for key, value in (("cols", _check_size("cols", cols)), ("rows", _check_size("rows", rows))):
        if value is not None:
            query[key] = value
    if command is not None:
        if not command:
            raise ValueError("command must not be empty")
        query["command"] = command
    return f"{session_path}/pty" + (f"?{urlencode(query)}" if query else "")


def _resize_message(cols: int, rows: int) -> str:
    return json.dumps(
        {"type": "resize", "cols": _check_size("cols", cols), "rows": _check_size("rows", rows)}
    )


def _as_bytes(data: Union[str, bytes]) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


class _TerminalState:
    """What both faces read from a terminal's messages: output bytes and the exit event."""

    exit_code: Optional[int] = None
    """The program's exit status once it exited (``128 + n`` when signal ``n`` ended it)."""
    signal: Optional[int] = None
    """The signal that ended the program, if one did."""
    exited: bool = False
    """Whether the program exited (its ``exit`` event came)."""

    def _take(self, message: Union[str, bytes]) -> Optional[bytes]:
        if isinstance(message, bytes):
            return message
        frame = decode_frame(message)
        if frame is None:
            return None
        if frame.get("type") == "error" and isinstance(frame.get("error"), dict):
            raise error_from_frame(frame["error"])
        if frame.get("type") == "exit":
            self.exited = True
            signal = frame.get("signal")
            self.signal = int(signal) if signal is not None else None
            code = frame.get("exitCode")
            if code is not None:
                self.exit_code = int(code)
            elif self.signal is not None:
                self.exit_code = 128 + self.signal
        return None


class Terminal(_TerminalState):
    """A terminal in a session, blocking. Iterate over it for its output as bytes."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    def write(self, data: Union[str, bytes]) -> None:
        """Types into the terminal (text is sent as UTF-8)."""
        try:
            self._ws.send(_as_bytes(data))
        except ConnectionClosed as e:
            raise SandboxOperationError("the terminal is closed") from e

    def resize(self, cols: int, rows: int) -> None:
        """Resizes the terminal (its program gets ``SIGWINCH``)."""
        try:
            self._ws.send(_resize_message(cols, rows))
        except ConnectionClosed as e:
            raise SandboxOperationError("the terminal is closed") from e

    def read(self, timeout: Optional[float] = None) -> bytes:
        """The next output, waiting at most ``timeout`` seconds (``TimeoutError`` then);
        ``b""`` once the terminal ended."""
        while True:
            try:
                message = self._ws.recv(timeout)
            except ConnectionClosed:
                return b""
            data = self._take(message)
            if data:
                return data

    def __iter__(self) -> Iterator[bytes]:
        while True:
            data = self.read()
            if not data:
                return
            yield data

    def read_all(self) -> bytes:
        """Everything the terminal prints until it ends."""
        return b"".join(self)

    def close(self) -> None:
        """Hangs up: everything started in the terminal is killed."""
        self._ws.close()

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


class AsyncTerminal(_TerminalState):
    """:class:`Terminal` for event loops: ``async for chunk in term``."""

    def __init__(self, ws: AsyncClientConnection) -> None:
        self._ws = ws

    async def write(self, data: Union[str, bytes]) -> None:
        """Types into the terminal (text is sent as UTF-8)."""
        try:
            await self._ws.send(_as_bytes(data))
        except ConnectionClosed as e:
            raise SandboxOperationError("the terminal is closed") from e

    async def resize(self, cols: int, rows: int) -> None:
        """Resizes the terminal (its program gets ``SIGWINCH``)."""
        try:
            await self._ws.send(_resize_message(cols, rows))
        except ConnectionClosed as e:
            raise SandboxOperationError("the terminal is closed") from e

    async def read(self, timeout: Optional[float] = None) -> bytes:
        """The next output, waiting at most ``timeout`` seconds (``TimeoutError`` then);
        ``b""`` once the terminal ended."""
        while True:
            try:
                message = await asyncio.wait_for(self._ws.recv(), timeout)
            except ConnectionClosed:
                return b""
            data = self._take(message)
            if data:
                return data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            data = await self.read()
            if not data:
                return
            yield data

    async def read_all(self) -> bytes:
        """Everything the terminal prints until it ends."""
        return b"".join([chunk async for chunk in self])

    async def close(self) -> None:
        """Hangs up: everything started in the terminal is killed."""
        await self._ws.close()

    async def __aenter__(self) -> "AsyncTerminal":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()
