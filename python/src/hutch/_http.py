"""The HTTP transport shared by every part of the SDK: base URL, bearer token, error mapping."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional, Union
from urllib.parse import urlsplit, urlunsplit

import httpx

from .errors import SandboxConnectionError, error_from_response

__all__ = ["Transport", "normalize_api_url"]

_IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})

Params = Mapping[str, Union[str, int, float, bool, None]]


def normalize_api_url(api_url: str) -> str:
    """``http://host:port`` or ``http://host:port/v1`` → ``http://host:port/v1`` (no slash)."""
    url = api_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"api_url must start with http:// or https://, got {api_url!r}")
    if not url.endswith("/v1"):
        url += "/v1"
    return url


class Transport:
    """One ``httpx.Client`` with the bearer token, answering JSON or raising SDK errors."""

    def __init__(
        self,
        api_url: str,
        bearer_token: str,
        timeout: float = 30.0,
        verify_ssl: bool = True,
    ) -> None:
        self.api_url = normalize_api_url(api_url)
        self.bearer_token = bearer_token
        self.timeout = timeout
        self.verify_ssl = verify_ssl
        self._client = httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {bearer_token}", "User-Agent": "hutch-python"},
            timeout=timeout,
            verify=verify_ssl,
        )

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

    def close(self) -> None:
        """Closes the connection pool."""
        self._client.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Optional[Params] = None,
        json_body: Any = None,
        content: Any = None,
        files: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> httpx.Response:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        kwargs: dict[str, Any] = {"params": clean}
        if json_body is not None:
            kwargs["json"] = json_body
        if content is not None:
            kwargs["content"] = content
        if files is not None:
            kwargs["files"] = files
        if headers:
            kwargs["headers"] = dict(headers)
        if timeout is not None:
            kwargs["timeout"] = timeout
        # A keep-alive connection the server has just closed fails with "disconnected
        # without sending a response": an idempotent request is safe to send once more.
        retries = 1 if method in _IDEMPOTENT and content is None and files is None else 0
        while True:
            try:
                response = self._client.request(method, path, **kwargs)
                break
            except httpx.RemoteProtocolError as e:
                if retries > 0:
                    retries -= 1
                    continue
                raise SandboxConnectionError(f"cannot reach {self.api_url}: {e}") from e
            except httpx.TimeoutException as e:
                raise SandboxConnectionError(
                    f"{method} {path}: no answer from {self.api_url} in time ({e})"
                ) from e
            except httpx.TransportError as e:
                raise SandboxConnectionError(f"cannot reach {self.api_url}: {e}") from e
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.headers, response.text)
        return response

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Optional[Params] = None,
        json_body: Any = None,
        content: Any = None,
        files: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> httpx.Response:
        """Sends a request; raises the SDK error matching a 4xx/5xx answer."""
        return self._send(
            method,
            path,
            params=params,
            json_body=json_body,
            content=content,
            files=files,
            headers=headers,
            timeout=timeout,
        )

    def json(
        self,
        method: str,
        path: str,
        *,
        params: Optional[Params] = None,
        json_body: Any = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Sends a request and returns its JSON body (``None`` when empty)."""
        response = self._send(method, path, params=params, json_body=json_body, timeout=timeout)
        if not response.content:
            return None
        try:
            return response.json()
        except json.JSONDecodeError as e:
            raise SandboxConnectionError(f"{method} {path}: the answer is not JSON") from e

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Optional[Params] = None,
        json_body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[httpx.Response]:
        """Opens a streamed response; raises the SDK error matching a 4xx/5xx answer."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        kwargs: dict[str, Any] = {"params": clean}
        if json_body is not None:
            kwargs["json"] = json_body
        if headers:
            kwargs["headers"] = dict(headers)
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            with self._client.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(
                        response.status_code, response.headers, response.text
                    )
                yield response
        except httpx.TransportError as e:
            raise SandboxConnectionError(f"cannot reach {self.api_url}: {e}") from e
