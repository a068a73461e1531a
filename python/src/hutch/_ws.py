"""WebSocket plumbing: connect with the bearer token, map a refused handshake to an SDK error,
read JSON frames and the close code; blocking (``ws_connect``) and for event loops
(``ws_connect_async``)."""

from __future__ import annotations

import inspect
import json
import ssl
from contextlib import asynccontextmanager, contextmanager
from typing import Any, AsyncIterator, Dict, Iterator, Optional, Tuple, Union

from websockets.asyncio.client import ClientConnection as AsyncClientConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from ._http import _Base
from .errors import SandboxAPIError, SandboxConnectionError, error_from_response

__all__ = [
    "ws_open",
    "ws_open_async",
    "ws_connect",
    "ws_connect_async",
    "decode_frame", "ws_frames", "FrameReader", "AsyncFrameReader"]

_SUPPORTS_PROXY = "proxy" in inspect.signature(connect).parameters


def _connect_args(
    transport: _Base, path: str, open_timeout: Optional[float]
) -> Tuple[str, Dict[str, Any]]:
    url = transport.ws_url + path
    kwargs: Dict[str, Any] = {
        "additional_headers": {"Authorization": f"Bearer {transport.bearer_token}"},
        "open_timeout": open_timeout if open_timeout is not None else transport.timeout,
        "max_size": None,
        "ping_interval": None,
        "compression": None,
    }
    if _SUPPORTS_PROXY:
        kwargs["proxy"] = None
    if url.startswith("wss://") and not transport.verify_ssl:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        kwargs["ssl"] = context
    return url, kwargs


def _refused(url: str, e: Exception) -> SandboxAPIError:
    if isinstance(e, InvalidStatus):
        response = e.response
        body = response.body.decode("utf-8", "replace") if response.body else ""
        return error_from_response(response.status_code, response.headers, body)
    return SandboxConnectionError(f"cannot open {url}: {e}")


_CONNECT_ERRORS = (InvalidHandshake, OSError, TimeoutError)


def ws_open(transport: _Base, path: str, open_timeout: Optional[float] = None) -> ClientConnection:
    """Opens ``ws(s)://…/v1{path}`` with the bearer header; raises SDK errors on refusal. The
    caller closes it."""
    url, kwargs = _connect_args(transport, path, open_timeout)
    try:
        # Entered, as websockets wants of a connection someone closes (the caller does).
        ws: ClientConnection = connect(url, **kwargs).__enter__()
        return ws
    except _CONNECT_ERRORS as e:
        raise _refused(url, e) from e


async def ws_open_async(
    transport: _Base, path: str, open_timeout: Optional[float] = None
) -> AsyncClientConnection:
    """:func:`ws_open` for event loops."""
    url, kwargs = _connect_args(transport, path, open_timeout)
    try:
        return await async_connect(url, **kwargs)
    except _CONNECT_ERRORS as e:
        raise _refused(url, e) from e


@contextmanager
def ws_connect(
    transport: _Base, path: str, open_timeout: Optional[float] = None
) -> Iterator[ClientConnection]:
    """:func:`ws_open`, closed on exit."""
    with ws_open(transport, path, open_timeout) as ws:
        yield ws


@asynccontextmanager
async def ws_connect_async(
    transport: _Base, path: str, open_timeout: Optional[float] = None
) -> AsyncIterator[AsyncClientConnection]:
    """:func:`ws_open_async`, closed on exit."""
    ws = await ws_open_async(transport, path, open_timeout)
    try:
        yield ws
    finally:
        await ws.close()


def decode_frame(message: Union[str, bytes]) -> Optional[Dict[str, Any]]:
    """A JSON object frame, or ``None`` for anything else."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    try:
        frame = json.loads(message)
    except ValueError:
        return None
    return frame if isinstance(frame, dict) else None


class CloseCode:
    """How a WebSocket closed: the code and reason of the peer's close frame, or 1006."""

    close_code: Optional[int] = None
    close_reason: str = ""

    def _closed(self, e: ConnectionClosed) -> None:
        if e.rcvd is not None:
            self.close_code = e.rcvd.code
            self.close_reason = e.rcvd.reason
        else:
            self.close_code = 1006


class FrameReader(CloseCode):
    """Iterates over a WebSocket's JSON text frames; ``close_code`` is set once it closes."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        while True:
            try:
                message = self.ws.recv()
            except ConnectionClosed as e:
                self._closed(e)
                return
            frame = decode_frame(message)
            if frame is not None:
                yield frame


class AsyncFrameReader(CloseCode):
    """:class:`FrameReader` for event loops: ``async for frame in AsyncFrameReader(ws)``."""

    def __init__(self, ws: AsyncClientConnection) -> None:
        self.ws = ws

    async def __aiter__(self) -> AsyncIterator[Dict[str, Any]]:
        while True:
            try:
                message = await self.ws.recv()
            except ConnectionClosed as e:
                self._closed(e)
                return
            frame = decode_frame(message)
            if frame is not None:
                yield frame


def ws_frames(ws: ClientConnection) -> Iterator[Dict[str, Any]]:
    """The JSON frames of ``ws`` until it closes."""
    return iter(FrameReader(ws))
