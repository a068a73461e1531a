"""Ports of a session reached from outside: ``/sessions/{id}/ports``.

A process listening on a TCP port inside a session (``python3 -m http.server 8000``) answers
HTTP and WebSocket at ``ports.url(8000)`` with the bearer token, and, for a person with a
browser, at the signed link ``ports.link(8000)`` needs no token until it expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, List, Mapping, Optional

import httpx

from ._http import AsyncTransport, Call, Transport, _Base

__all__ = [
    "MIN_LINK_TTL",
    "MAX_LINK_TTL",
    "ListeningPort",
    "PortLink",
    "Ports",
    "AsyncPorts",
]

MIN_LINK_TTL = 1
"""Shortest lifetime of a preview link, in seconds."""
MAX_LINK_TTL = 86400
"""Longest lifetime of a preview link, in seconds (24 hours)."""


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, got {port!r}")
    return port


def _app_path(path: str) -> str:
    return path.lstrip("/")


@dataclass(frozen=True)
class ListeningPort:
    """One listening TCP socket inside the session."""

    port: int
    address: str
    """``0.0.0.0`` or ``::`` for every address, ``127.0.0.1`` or ``::1`` for loopback."""
    pid: Optional[int] = None
    """The pid (inside the session) of a process holding the socket, when one was found."""
    process: Optional[str] = None
    """That process's name, when one was found."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ListeningPort":
        """Parses the wire form."""
        pid = data.get("pid")
        process = data.get("process")
        return cls(
            port=int(data["port"]),
            address=str(data["address"]),
            pid=int(pid) if pid is not None else None,
            process=str(process) if process is not None else None,
        )


@dataclass(frozen=True)
class PortLink:
    """A signed preview link to one port: no bearer token needed until ``expires_at``."""

    url: str
    """The link on the API's own address, ``…/preview/{token}/``."""
    path: str
    """The same link as a path, ``/preview/{token}/``."""
    token: str
    expires_at: datetime
    host_url: Optional[str] = None
    """The host form, ``http(s)://{port}-{sessionId}.{domain}/?hutch_preview_token=…``, when the
    server has a preview domain; apps that use absolute paths work there."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "PortLink":
        """Parses the wire form."""
        from .sessions import parse_time

        host_url = data.get("hostUrl")
        return cls(
            url=str(data["url"]),
            path=str(data["path"]),
            token=str(data["token"]),
            expires_at=parse_time(str(data["expiresAt"])),
            host_url=str(host_url) if host_url is not None else None,
        )


def _check_ttl(ttl: int) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not MIN_LINK_TTL <= ttl <= MAX_LINK_TTL:
        raise ValueError(
            f"ttl must be an integer from {MIN_LINK_TTL} to {MAX_LINK_TTL} seconds, got {ttl!r}"
        )
    return ttl


class _PortCalls:
    """The requests and addresses of one session's ports, shared by both faces."""

    def __init__(self, transport: _Base, session_path: str) -> None:
        self._base_transport = transport
        self._session_path = session_path

    def _list_call(self) -> Call[List[ListeningPort]]:
        return Call(
            "GET",
            f"{self._session_path}/ports",
            parse=lambda data: [ListeningPort.from_json(p) for p in (data or {}).get("ports", [])],
        )

    def _app_call(self, port: int, method: str, path: str, kwargs: Mapping[str, Any]) -> Call[Any]:
        port = _check_port(port)
        return Call(method, f"{self._session_path}/ports/{port}/{_app_path(path)}", **kwargs)

    def _link_call(self, port: int, ttl: int) -> Call[PortLink]:
        port = _check_port(port)
        return Call(
            "POST",
            f"{self._session_path}/ports/{port}/link",
            json_body={"ttl": _check_ttl(ttl)},
            parse=PortLink.from_json,
        )

    def url(self, port: int, path: str = "/") -> str:
        """The URL of ``path`` on ``port`` through the API (it needs the bearer token, which
        ``request`` sends)."""
        port = _check_port(port)
        return f"{self._base_transport.api_url}{self._session_path}/ports/{port}/{_app_path(path)}"

    def ws_url(self, port: int, path: str = "/") -> str:
        """:meth:`url` with a ``ws://`` or ``wss://`` scheme, for WebSocket clients (send the
        ``Authorization: Bearer`` header yourself)."""
        port = _check_port(port)
        return f"{self._base_transport.ws_url}{self._session_path}/ports/{port}/{_app_path(path)}"


class Ports(_PortCalls):
    """The ports of one session."""

    def __init__(self, transport: Transport, session_path: str) -> None:
        super().__init__(transport, session_path)
        self._transport = transport

    def list(self) -> List[ListeningPort]:
        """The session's listening TCP sockets, by port."""
        return self._transport.call(self._list_call())

    def request(
        self,
        port: int,
        method: str = "GET",
        path: str = "/",
        **kwargs: Any,
    ) -> httpx.Response:
        """Sends a request to ``path`` on ``port`` with the bearer token and returns the app's
        answer. ``kwargs`` are those of the SDK's transport: ``content``, ``json_body``,
        ``headers``, ``params``, ``timeout``. A 4xx/5xx answer raises the matching SDK error; a port
        nothing listens on raises :class:`SandboxOperationError` with code
        ``port_unreachable``."""
        return self._transport.send(self._app_call(port, method, path, kwargs))

    def link(self, port: int, ttl: int = 3600) -> PortLink:
        """A signed preview link to ``port`` that works without a bearer token for ``ttl``
        seconds (1 to 86400). Whoever holds it reaches this port of this session, and nothing
        else."""
        return self._transport.call(self._link_call(port, ttl))


class AsyncPorts(_PortCalls):
    """:class:`Ports` for event loops."""

    def __init__(self, transport: AsyncTransport, session_path: str) -> None:
        super().__init__(transport, session_path)
        self._transport = transport

    async def list(self) -> List[ListeningPort]:
        """The session's listening TCP sockets, by port."""
        return await self._transport.call(self._list_call())

    async def request(
        self, port: int, method: str = "GET", path: str = "/", **kwargs: Any
    ) -> httpx.Response:
        """Sends a request to ``path`` on ``port``; see :meth:`Ports.request`."""
        return await self._transport.send(self._app_call(port, method, path, kwargs))

    async def link(self, port: int, ttl: int = 3600) -> PortLink:
        """A signed preview link to ``port``; see :meth:`Ports.link`."""
        return await self._transport.call(self._link_call(port, ttl))
