"""A real ``hutch serve`` and MCP clients of it over both transports.

The server is the Python SDK tests' (``python/tests/conftest.py``: ``$HUTCH_BIN`` or
``target/debug/hutch``, a private data directory, a free loopback port, tokens from ``hutch
token``; skipped without root or a binary, except under ``CI=true``). The clients are the
official MCP Python SDK's: ``streamable_http_client`` to ``POST /v1/mcp`` with a bearer token,
and ``stdio_client`` running ``hutch mcp`` with ``HUTCH_URL`` and ``HUTCH_TOKEN``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import AsyncIterator, Iterator

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

REPO = Path(__file__).resolve().parents[4]


def _load_sdk_conftest():
    # The SDK's conftest imports its sibling modules (``faces``) by name.
    sdk_tests = str(REPO / "python" / "tests")
    if sdk_tests not in sys.path:
        sys.path.insert(0, sdk_tests)
    spec = importlib.util.spec_from_file_location(
        "hutch_sdk_conftest", REPO / "python" / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sdk = _load_sdk_conftest()


class McpServer:
    """A running ``hutch serve`` and the ways an MCP client reaches it."""

    def __init__(self, server) -> None:
        self.server = server
        self.url = server.url
        self.mcp_url = server.url + "/v1/mcp"

    def token(self, sub: str) -> str:
        """A token for tenant ``sub``."""
        return self.server.token(sub)

    @contextlib.asynccontextmanager
    async def http(self, token: str) -> AsyncIterator[ClientSession]:
        """An initialised MCP session over streamable HTTP as the tenant of ``token``."""
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=120) as http:
            async with streamable_http_client(self.mcp_url, http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    yield session

    @contextlib.asynccontextmanager
    async def stdio(self, token: str) -> AsyncIterator[ClientSession]:
        """An initialised MCP session with ``hutch mcp`` as the tenant of ``token``."""
        params = StdioServerParameters(
            command=str(self.server.binary), args=["mcp"],
            env={"HUTCH_URL": self.url, "HUTCH_TOKEN": token, "PATH": os.environ.get("PATH", "")},
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


@pytest.fixture(scope="session")
def hutch_server() -> Iterator[McpServer]:
    """The shared server."""
    server = sdk.start_server(["--warm-pool", "2"])
    yield McpServer(server)
    server.stop()


@pytest.fixture
def token(hutch_server: McpServer) -> str:
    """A token of a tenant no other test uses."""
    return hutch_server.token(sdk.new_tenant())


@pytest.fixture(params=["http", "stdio"])
def transport(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once over each transport."""
    return str(request.param)
