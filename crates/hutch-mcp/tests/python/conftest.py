"""A real ``hutch serve`` and MCP clients of it over both transports.

The binary comes from ``$HUTCH_BIN`` (default ``target/debug/hutch`` of this repository). The
server gets a private data directory and a free loopback port; tokens are minted with ``hutch
token``. The clients are the official MCP Python SDK's: ``streamable_http_client`` to
``POST /v1/mcp`` with a bearer token, and ``stdio_client`` running ``hutch mcp`` with
``HUTCH_URL`` and ``HUTCH_TOKEN``. Sandboxes need root: without it (or without a binary) the
tests are skipped, except under ``CI=true`` where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import AsyncIterator, Iterator, List

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

REPO = Path(__file__).resolve().parents[4]
SECRET = "test-secret-for-hutch-mcp-tests"


def _binary() -> Path:
    return Path(os.environ.get("HUTCH_BIN", REPO / "target" / "debug" / "hutch"))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"MCP tests cannot run under CI: {reason}")
    pytest.skip(reason)


class HutchServer:
    """One running ``hutch serve`` with its own data directory."""

    def __init__(self, binary: Path, args: List[str]) -> None:
        self.binary = binary
        self.data_dir = Path(tempfile.mkdtemp(prefix="hutch-mcp", dir="/tmp"))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HUTCH_")},
            "HUTCH_JWT_SECRET": SECRET,
            "HUTCH_LOG": "warn",
        }
        self.process = subprocess.Popen(
            [str(binary), "serve", "--listen", "127.0.0.1:0", "--on-exit", "destroy",
             "--data-dir", str(self.data_dir), *args],
            env=self.env, stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            match = re.search(r"listening on (\S+)", line)
            if match:
                url = match.group(1).rstrip("/")
        if url is None:
            self.stop()
            raise RuntimeError("hutch serve exited before listening")
        self.url = url
        self.mcp_url = url + "/v1/mcp"
        threading.Thread(target=self._drain, daemon=True).start()
        self._wait_healthy()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("hutch serve never became healthy")

    def token(self, sub: str) -> str:
        """A token for tenant ``sub``, minted by ``hutch token``."""
        out = subprocess.run(
            [str(self.binary), "token", "--sub", sub, "--ttl", "1h", "--data-dir", str(self.data_dir)],
            env=self.env, check=True, capture_output=True, text=True,
        )
        return out.stdout.strip()

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
            command=str(self.binary), args=["mcp"],
            env={"HUTCH_URL": self.url, "HUTCH_TOKEN": token, "PATH": os.environ.get("PATH", "")},
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session

    def stop(self) -> None:
        """SIGTERM (the server destroys its sandboxes), then wait; SIGKILL after 20 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def hutch_server() -> Iterator[HutchServer]:
    """The shared server."""
    binary = _binary()
    if not binary.exists():
        _unavailable(f"no hutch binary at {binary}: build it (cargo build -p hutch) or set HUTCH_BIN")
    if os.geteuid() != 0:
        _unavailable("sandbox tests need root")
    server = HutchServer(binary, ["--warm-pool", "2"])
    yield server
    server.stop()


@pytest.fixture
def token(hutch_server: HutchServer) -> str:
    """A token of a tenant no other test uses."""
    return hutch_server.token(f"mcp-{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["http", "stdio"])
def transport(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once over each transport."""
    return str(request.param)
