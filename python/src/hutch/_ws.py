"""WebSocket plumbing: connect with the bearer token, map a refused handshake to an SDK error,
read JSON frames and the close code."""

from __future__ import annotations

import inspect
import json
import ssl
from contextlib import ExitStack, contextmanager
from typing import Any, Dict, Iterator, Optional

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from ._http import Transport
from .errors import SandboxConnectionError, error_from_response

__all__ = ["ws_connect", "ws_frames", "FrameReader"]

_SUPPORTS_PROXY = "proxy" in inspect.signature(connect).parameters


@contextmanager
def ws_connect(
    transport: Transport, path: str, open_timeout: Optional[float] = None
) -> Iterator[ClientConnection]:
    """Opens ``ws(s)://…/v1{path}`` with the bearer header; raises SDK errors on refusal."""
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
    with ExitStack() as stack:
        try:
            ws: ClientConnection = stack.enter_context(connect(url, **kwargs))
        except InvalidStatus as e:
            response = e.response
            body = response.body.decode("utf-8", "replace") if response.body else ""
            raise error_from_response(response.status_code, response.headers, body) from e
        except (InvalidHandshake, OSError, TimeoutError) as e:
            raise SandboxConnectionError(f"cannot open {url}: {e}") from e
        yield ws


class FrameReader:
    """Iterates over a WebSocket's JSON text frames; ``close_code`` is set once it closes."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.close_code: Optional[int] = None
        self.close_reason: str = ""

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        while True:
            try:
                message = self.ws.recv()
            except ConnectionClosed as e:
                if e.rcvd is not None:
                    self.close_code = e.rcvd.code
                    self.close_reason = e.rcvd.reason
                else:
                    self.close_code = 1006
                return
            if isinstance(message, bytes):
                message = message.decode("utf-8", "replace")
            try:
                frame = json.loads(message)
            except ValueError:
                continue
            if isinstance(frame, dict):
                yield frame


def ws_frames(ws: ClientConnection) -> Iterator[Dict[str, Any]]:
    """The JSON frames of ``ws`` until it closes."""
    return iter(FrameReader(ws))
