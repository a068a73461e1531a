"""The HTTP transports shared by every part of the SDK: base URL, bearer token, error mapping.

The SDK's operations are described once, as :class:`Call` values (a request and the function
that parses its answer); :class:`Transport` sends them blocking and :class:`AsyncTransport`
from an event loop, each over kept connections. Over ``http://``, JSON calls and NDJSON
streams (``call``, ``lines``) take the lean HTTP/1.1 client of :mod:`._wire`; uploads,
downloads, raw answers and ``https://`` go through httpx.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Generic,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    TypeVar,
    Union,
)
from urllib.parse import quote, urlencode, urlsplit, urlunsplit
from urllib.request import getproxies, proxy_bypass

import httpx

from ._wire import AsyncLane, Head, Lane, LineSplitter, WireError, WireTimeout
from .errors import SandboxAPIError, SandboxConnectionError, error_from_response

__all__ = ["Call", "Transport", "AsyncTransport", "normalize_api_url", "answer_json"]

_IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})

Params = Mapping[str, Union[str, int, float, bool, None]]
T = TypeVar("T")
TimeoutArg = Union[None, float, httpx.Timeout]

POOL_SIZE = 8
"""Most connections in one of :class:`AsyncTransport`'s pools."""


def normalize_api_url(api_url: str) -> str:
    """``http://host:port`` or ``http://host:port/v1`` → ``http://host:port/v1`` (no slash)."""
    url = api_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"api_url must start with http:// or https://, got {api_url!r}")
    if not url.endswith("/v1"):
        url += "/v1"
    return url


def answer_json(response: httpx.Response) -> Any:
    """The JSON body of an answer (``None`` when empty)."""
    if not response.content:
        return None
    try:
        return response.json()
    except json.JSONDecodeError as e:
        raise SandboxConnectionError(
            f"{response.request.method} {response.request.url.path}: the answer is not JSON"
        ) from e


def _identity(data: Any) -> Any:
    return data


@dataclass
class Call(Generic[T]):
    """One request of the API and how to read its answer, independent of any I/O.

    ``parse`` gets the answer's JSON body, or the whole ``httpx.Response`` when ``raw``.
    """

    method: str
    path: str
    params: Optional[Params] = None
    json_body: Any = None
    content: Any = None
    files: Any = None
    headers: Optional[Mapping[str, str]] = None
    timeout: TimeoutArg = None
    parse: Callable[[Any], T] = field(default=_identity)
    raw: bool = False

    def kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of ``httpx.Client.request``/``stream`` for this call."""
        kwargs: Dict[str, Any] = {
            "params": {k: v for k, v in (self.params or {}).items() if v is not None}
        }
        if self.json_body is not None:
            kwargs["json"] = self.json_body
        if self.content is not None:
            kwargs["content"] = self.content
        if self.files is not None:
            kwargs["files"] = self.files
        if self.headers:
            kwargs["headers"] = dict(self.headers)
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        return kwargs

    @property
    def retries(self) -> int:
        """How often a request may be sent again on a connection the server had closed: once
        for an idempotent request without a body, never otherwise."""
        return 1 if self.method in _IDEMPOTENT and self.content is None and self.files is None else 0

    def answer(self, response: httpx.Response) -> T:
        """Parses a successful answer."""
        return self.parse(response if self.raw else answer_json(response))


def _lean(call: Call[Any]) -> bool:
    """Whether the lean client can send ``call``: a JSON body or none, an answer read as
    JSON or as lines."""
    return call.content is None and call.files is None and not call.raw and call.path.startswith("/")


def _direct(api_url: str) -> bool:
    """Whether the lean client can reach ``api_url``: plain ``http://``, and no proxy set in
    the environment for it (httpx honours ``HTTP_PROXY``, so those calls stay with httpx)."""
    if not api_url.startswith("http://"):
        return False
    proxies = getproxies()
    if "http" not in proxies and "all" not in proxies:
        return True
    return bool(proxy_bypass(urlsplit(api_url).hostname or ""))


def _query_value(value: Union[str, int, float, bool]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _LaneRoute:
    """What the lean client needs of a transport: where the API is and the headers every
    request carries; turns a :class:`Call` into a request and an answer into its result."""

    def __init__(self, base: "_Base") -> None:
        parts = urlsplit(base.api_url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 80
        self.netloc = parts.netloc
        self.base_path = parts.path
        self.api_url = base.api_url
        self.timeout = base.timeout
        self.headers = {
            "Authorization": f"Bearer {base.bearer_token}",
            "User-Agent": "hutch-python",
            "Accept-Encoding": "identity",
        }

    def request(
        self, call: Call[Any]
    ) -> Tuple[str, str, Dict[str, str], Optional[bytes], Optional[float], Optional[float]]:
        """Method, target, headers, body and the connect and read timeouts of ``call``."""
        target = self.base_path + quote(call.path, safe="/:@!$&'()*+,;=-._~%")
        params = {k: _query_value(v) for k, v in (call.params or {}).items() if v is not None}
        if params:
            target += "?" + urlencode(params)
        headers = dict(self.headers)
        body = None
        if call.json_body is not None:
            body = json.dumps(call.json_body).encode()
            headers["Content-Type"] = "application/json"
        if call.headers:
            headers.update(call.headers)
        timeout = self.timeout if call.timeout is None else call.timeout
        if isinstance(timeout, httpx.Timeout):
            return call.method, target, headers, body, timeout.connect, timeout.read
        return call.method, target, headers, body, timeout, timeout

    def error(self, call: Call[Any], e: WireError) -> SandboxAPIError:
        """The SDK error for a failed exchange."""
        if isinstance(e, WireTimeout):
            return SandboxConnectionError(
                f"{call.method} {call.path}: no answer from {self.api_url} in time ({e})"
            )
        return SandboxConnectionError(f"cannot reach {self.api_url}: {e}")

    @staticmethod
    def check(head: Head, body: bytes) -> None:
        """Raises the SDK error matching a 4xx/5xx answer."""
        if head.status >= 400:
            raise error_from_response(head.status, head.headers, body.decode("utf-8", "replace"))

    @staticmethod
    def answer(call: Call[T], body: bytes) -> T:
        """Parses a successful answer's JSON body."""
        if not body:
            return call.parse(None)
        try:
            data = json.loads(body)
        except ValueError as e:
            raise SandboxConnectionError(f"{call.method} {call.path}: the answer is not JSON") from e
        return call.parse(data)


def _transport_error(api_url: str, call: Call[Any], e: httpx.TransportError) -> SandboxAPIError:
    if isinstance(e, httpx.TimeoutException):
        return SandboxConnectionError(
            f"{call.method} {call.path}: no answer from {api_url} in time ({e})"
        )
    return SandboxConnectionError(f"cannot reach {api_url}: {e}")


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise error_from_response(response.status_code, response.headers, response.text)


class _Base:
    """What both transports share: the address, the token and the client settings."""

    def __init__(
        self, api_url: str, bearer_token: str, timeout: float, verify_ssl: bool
    ) -> None:
        self.api_url = normalize_api_url(api_url)
        self.bearer_token = bearer_token
        self.timeout = timeout
        self.verify_ssl = verify_ssl
        self._route = _LaneRoute(self) if _direct(self.api_url) else None

    def _client_args(self) -> Dict[str, Any]:
        return {
            "base_url": self.api_url,
            "headers": {"Authorization": f"Bearer {self.bearer_token}", "User-Agent": "hutch-python"},
            "timeout": self.timeout,
            "verify": self.verify_ssl,
        }

    @property
    def root_url(self) -> str:
        """The server's root (the API URL without ``/v1``)."""
        return self.api_url[: -len("/v1")]

    @property
    def ws_url(self) -> str:
        """The API URL with a ``ws://`` or ``wss://`` scheme."""
        parts = urlsplit(self.api_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path, "", ""))


class Transport(_Base):
    """One ``httpx.Client`` with the bearer token, answering JSON or raising SDK errors."""

    def __init__(
        self,
        api_url: str,
        bearer_token: str,
        timeout: float = 30.0,
        verify_ssl: bool = True,
    ) -> None:
        super().__init__(api_url, bearer_token, timeout, verify_ssl)
        self._httpx: Optional[httpx.Client] = None
        route = self._route
        self._lane = None if route is None else Lane(route.host, route.port, route.netloc)

    @property
    def _client(self) -> httpx.Client:
        """The httpx client, made on first use (loading its TLS settings takes milliseconds,
        and a client of ``http://`` that only makes JSON calls never needs it)."""
        if self._httpx is None:
            self._httpx = httpx.Client(**self._client_args())
        return self._httpx

    def close(self) -> None:
        """Closes the connection pools."""
        if self._httpx is not None:
            self._httpx.close()
        if self._lane is not None:
            self._lane.close()

    @contextmanager
    def _exchange(self, call: Call[Any]) -> Iterator[Iterator[bytes]]:
        """Sends ``call`` with the lean client; yields its body's bytes as they come, after
        raising the SDK error of a 4xx/5xx answer."""
        assert self._lane is not None and self._route is not None
        route = self._route
        method, target, headers, body, connect, read = route.request(call)
        parts = self._lane.exchange(method, target, headers, body, connect, read, call.retries)
        try:
            head = next(parts)
            assert isinstance(head, Head)
            if head.status >= 400:
                route.check(head, b"".join(parts))  # type: ignore[arg-type]
            yield parts  # type: ignore[misc]
        except WireError as e:
            raise route.error(call, e) from e
        finally:
            parts.close()  # type: ignore[attr-defined]

    def send(self, call: Call[Any]) -> httpx.Response:
        """Sends a call; raises the SDK error matching a 4xx/5xx answer."""
        kwargs = call.kwargs()
        retries = call.retries
        while True:
            try:
                response = self._client.request(call.method, call.path, **kwargs)
                break
            except httpx.RemoteProtocolError as e:
                # A keep-alive connection the server has just closed fails with "disconnected
                # without sending a response": an idempotent request is safe to send again.
                if retries > 0:
                    retries -= 1
                    continue
                raise _transport_error(self.api_url, call, e) from e
            except httpx.TransportError as e:
                raise _transport_error(self.api_url, call, e) from e
        _raise_for_status(response)
        return response

    def call(self, call: Call[T]) -> T:
        """Sends a call and returns its parsed answer."""
        if self._lane is None or not _lean(call):
            return call.answer(self.send(call))
        with self._exchange(call) as parts:
            body = b"".join(parts)
        assert self._route is not None
        return self._route.answer(call, body)

    @contextmanager
    def lines(self, call: Call[Any]) -> Iterator[Iterator[str]]:
        """Opens a streamed answer read as lines (NDJSON); raises the SDK error matching a
        4xx/5xx answer."""
        if self._lane is None or not _lean(call):
            with self.stream(call) as response:
                yield response.iter_lines()
            return
        with self._exchange(call) as parts:
            yield _lines_of(parts)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Sends a request (``params``, ``json_body``, ``content``, ``files``, ``headers``,
        ``timeout``); raises the SDK error matching a 4xx/5xx answer."""
        return self.send(Call(method, path, **kwargs))

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Sends a request and returns its JSON body (``None`` when empty)."""
        return answer_json(self.send(Call(method, path, **kwargs)))

    @contextmanager
    def stream(self, call: Call[Any]) -> Iterator[httpx.Response]:
        """Opens a streamed answer; raises the SDK error matching a 4xx/5xx answer."""
        try:
            with self._client.stream(call.method, call.path, **call.kwargs()) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_status(response)
                yield response
        except httpx.TransportError as e:
            raise _transport_error(self.api_url, call, e) from e


class AsyncTransport(_Base):
    """One ``httpx.AsyncClient`` with the bearer token: :class:`Transport` for event loops."""

    def __init__(
        self,
        api_url: str,
        bearer_token: str,
        timeout: float = 30.0,
        verify_ssl: bool = True,
        max_connections: int = 200,
    ) -> None:
        super().__init__(api_url, bearer_token, timeout, verify_ssl)
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        # httpcore's pool looks at every connection for every request it places, which costs
        # more than the request itself once a hundred run at once: the connections are split
        # into pools of at most POOL_SIZE, and each request goes to the least busy one.
        self._pools = -(-max_connections // POOL_SIZE)
        self._pool_size = -(-max_connections // self._pools)
        self._httpx: List[httpx.AsyncClient] = []
        self._busy = [0] * self._pools
        route = self._route
        self._lane = (
            None if route is None else AsyncLane(route.host, route.port, route.netloc, max_connections)
        )

    @property
    def _clients(self) -> List[httpx.AsyncClient]:
        """The httpx clients, made on first use (see :attr:`Transport._client`)."""
        if not self._httpx:
            size = self._pool_size
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            self._httpx = [
                httpx.AsyncClient(limits=limits, **self._client_args()) for _ in range(self._pools)
            ]
        return self._httpx

    async def close(self) -> None:
        """Closes the connection pools."""
        for client in self._httpx:
            await client.aclose()
        if self._lane is not None:
            await self._lane.close()

    @asynccontextmanager
    async def _exchange(self, call: Call[Any]) -> AsyncIterator[AsyncIterator[bytes]]:
        """:meth:`Transport._exchange` for an event loop."""
        assert self._lane is not None and self._route is not None
        route = self._route
        method, target, headers, body, connect, read = route.request(call)
        parts = self._lane.exchange(method, target, headers, body, connect, read, call.retries)
        try:
            head = await parts.__anext__()
            assert isinstance(head, Head)
            if head.status >= 400:
                route.check(head, b"".join([chunk async for chunk in parts]))  # type: ignore[misc]
            yield parts  # type: ignore[misc]
        except WireError as e:
            raise route.error(call, e) from e
        finally:
            await parts.aclose()  # type: ignore[attr-defined]

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        """The least busy pool, counted busy while the caller uses it."""
        index = min(range(len(self._busy)), key=self._busy.__getitem__)
        self._busy[index] += 1
        try:
            yield self._clients[index]
        finally:
            self._busy[index] -= 1

    async def send(self, call: Call[Any]) -> httpx.Response:
        """Sends a call; raises the SDK error matching a 4xx/5xx answer."""
        kwargs = call.kwargs()
        retries = call.retries
        while True:
            try:
                async with self._client() as client:
                    response = await client.request(call.method, call.path, **kwargs)
                break
            except httpx.RemoteProtocolError as e:
                if retries > 0:
                    retries -= 1
                    continue
                raise _transport_error(self.api_url, call, e) from e
            except httpx.TransportError as e:
                raise _transport_error(self.api_url, call, e) from e
        _raise_for_status(response)
        return response

    async def call(self, call: Call[T]) -> T:
        """Sends a call and returns its parsed answer."""
        if self._lane is None or not _lean(call):
            return call.answer(await self.send(call))
        async with self._exchange(call) as parts:
            body = b"".join([chunk async for chunk in parts])
        assert self._route is not None
        return self._route.answer(call, body)

    @asynccontextmanager
    async def lines(self, call: Call[Any]) -> AsyncIterator[AsyncIterator[str]]:
        """:meth:`Transport.lines` for an event loop."""
        if self._lane is None or not _lean(call):
            async with self.stream(call) as response:
                yield response.aiter_lines()
            return
        async with self._exchange(call) as parts:
            yield _alines_of(parts)

    @asynccontextmanager
    async def stream(self, call: Call[Any]) -> AsyncIterator[httpx.Response]:
        """Opens a streamed answer; raises the SDK error matching a 4xx/5xx answer."""
        try:
            async with self._client() as client, client.stream(
                call.method, call.path, **call.kwargs()
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for_status(response)
                yield response
        except httpx.TransportError as e:
            raise _transport_error(self.api_url, call, e) from e


def _lines_of(parts: Iterator[bytes]) -> Iterator[str]:
    """The lines of a body read in pieces."""
    splitter = LineSplitter()
    for chunk in parts:
        for line in splitter.feed(chunk):
            yield line.decode()
    for line in splitter.finish():
        yield line.decode()


async def _alines_of(parts: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """:func:`_lines_of` for an event loop."""
    splitter = LineSplitter()
    async for chunk in parts:
        for line in splitter.feed(chunk):
            yield line.decode()
    for line in splitter.finish():
        yield line.decode()
