"""A real ``hutch serve`` for the SDK tests.

The binary comes from ``$HUTCH_BIN`` (default: ``target/debug/hutch``, else
``target/release/hutch`` of this repository). Each server gets a private data directory and a
free loopback port; tokens are minted with ``hutch token`` on the same data directory. Sandboxes
need root: without it (or without a binary) the tests are skipped, except under ``CI=true``
where that is a failure.

Every test that takes the ``client`` fixture (or ``session``, made from it) runs twice: with
the blocking ``SessionsClient`` (``[sync]``) and with ``AsyncSessionsClient`` driven through
``faces.blocking`` (``[async]``), so one test body checks both faces of the SDK.

Tests for routes a server may not have yet are marked
``@pytest.mark.requires_route("POST", "/v1/sessions/{id}/code")``: they are skipped while the
server's ``/v1/openapi.json`` lacks the route, and run as soon as it has it
(``HUTCH_TEST_ALL_ROUTES=1`` runs them regardless, for a server whose document lags).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pytest

import faces
from hutch import AsyncSessionsClient, SessionsClient

REPO = Path(__file__).resolve().parents[2]
SECRET = "test-secret-for-hutch-python-sdk-tests"


def _binary() -> Optional[Path]:
    env = os.environ.get("HUTCH_BIN")
    if env:
        return Path(env)
    for profile in ("debug", "release"):
        candidate = REPO / "target" / profile / "hutch"
        if candidate.exists():
            return candidate
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"SDK tests cannot run under CI: {reason}")
    pytest.skip(reason)


class HutchServer:
    """One running ``hutch serve`` with its own data directory."""

    def __init__(self, binary: Path, args: List[str]) -> None:
        self.binary = binary
        self._tmp = tempfile.mkdtemp(prefix="hutch-sdk", dir="/tmp")
        self.data_dir = Path(self._tmp)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HUTCH_")},
            "HUTCH_JWT_SECRET": SECRET,
            "HUTCH_LOG": "warn",
        }
        self.process = subprocess.Popen(
            [str(binary), "serve", "--listen", "127.0.0.1:0", "--on-exit", "destroy",
             "--data-dir", str(self.data_dir), *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
        )
        assert self.process.stdout is not None
        url = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            match = re.search(r"listening on (\S+)", line)
            if match:
                url = match.group(1).rstrip("/")
                break
        if url is None:
            self.stop()
            raise RuntimeError("hutch serve exited before listening")
        self.url = url
        self.api_url = url + "/v1"
        # Keep draining stdout so the server never blocks on it.
        threading.Thread(target=self._drain, daemon=True).start()
        self._wait_healthy()
        self._routes: Optional[Set[Tuple[str, str]]] = None

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError("hutch serve exited while starting")
            time.sleep(0.05)
        raise RuntimeError("hutch serve never became healthy")

    def token(self, sub: str, admin: bool = False, ttl: str = "1h") -> str:
        """A token for tenant ``sub``, minted by ``hutch token``."""
        args = [str(self.binary), "token", "--sub", sub, "--ttl", ttl, "--data-dir", str(self.data_dir)]
        if admin:
            args.append("--admin")
        out = subprocess.run(args, env=self.env, check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def client(self, sub: Optional[str] = None, face: str = "sync") -> SessionsClient:
        """A client for a tenant (a fresh one by default): the blocking client, or with
        ``face="async"`` the async client driven through :func:`faces.blocking`."""
        token = self.token(sub or new_tenant())
        if face == "async":

            async def make() -> AsyncSessionsClient:
                return AsyncSessionsClient(self.api_url, bearer_token=token)

            return faces.blocking(faces.run(make()))  # type: ignore[no-any-return]
        return SessionsClient(self.api_url, bearer_token=token)

    def routes(self) -> Set[Tuple[str, str]]:
        """``(METHOD, path-with-{})`` of every route in the server's OpenAPI document."""
        if self._routes is None:
            with urllib.request.urlopen(self.api_url + "/openapi.json", timeout=10) as r:
                doc: Dict[str, Any] = json.load(r)
            self._routes = {
                (method.upper(), _shape(path))
                for path, item in doc.get("paths", {}).items()
                for method in item
            }
        return self._routes

    def stop(self) -> None:
        """SIGTERM (the server destroys its sandboxes), then wait; SIGKILL after 60 s.

        A loaded machine can make the destroys slow, and a SIGKILL leaves the sandboxes
        (mounted disks, cgroups) behind, so the wait is long and a kill says so.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                print(
                    f"hutch serve (pid {self.process.pid}) did not stop within 60 s of "
                    f"SIGTERM: killed; its sandboxes may be left under {self._tmp}",
                    file=sys.stderr,
                )
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self._tmp, ignore_errors=True)


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def new_tenant() -> str:
    """A tenant name no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


def start_server(args: List[str]) -> HutchServer:
    """Starts a server, or skips (fails under CI) when it cannot run here."""
    binary = _binary()
    if binary is None or not binary.exists():
        _unavailable("no hutch binary: build it (cargo build -p hutch) or set HUTCH_BIN")
    if os.geteuid() != 0:
        _unavailable("sandbox tests need root")
    assert binary is not None
    return HutchServer(binary, args)


@pytest.fixture(scope="session")
def hutch_server() -> Iterator[HutchServer]:
    """The shared server (warm pool of 2)."""
    server = start_server(["--warm-pool", "2"])
    yield server
    server.stop()


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest) -> str:
    """Which face of the SDK a test drives: ``sync`` or ``async``."""
    return str(request.param)


def _tenant_client(server: HutchServer, face: str) -> Iterator[SessionsClient]:
    """A client for a fresh tenant; its sessions are deleted afterwards."""
    c = server.client(face=face)
    yield c
    try:
        for s in c.list_sessions(limit=100):
            c.delete_session(s.session_id)
    finally:
        c.close()


@pytest.fixture
def client(hutch_server: HutchServer, face: str) -> Iterator[SessionsClient]:
    """A client for a fresh tenant, of each face; its sessions are deleted afterwards."""
    yield from _tenant_client(hutch_server, face)


@pytest.fixture
def sync_client(hutch_server: HutchServer) -> Iterator[SessionsClient]:
    """A blocking client for a fresh tenant, for tests of the blocking face alone."""
    yield from _tenant_client(hutch_server, "sync")


@pytest.fixture
def session(client: SessionsClient) -> Any:
    """A running session of the test's tenant."""
    return client.create_session(ttl=600)


@pytest.fixture(autouse=True)
def _requires_route(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("requires_route")
    if marker is None:
        return
    if os.environ.get("HUTCH_TEST_ALL_ROUTES") == "1":
        return
    server: HutchServer = request.getfixturevalue("hutch_server")
    method, path = marker.args
    if (method.upper(), _shape(path)) not in server.routes():
        pytest.skip(f"the server has no {method.upper()} {path} yet")


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    """A ``docker-registry`` on a loopback port (one per test module); yields its address."""
    if shutil.which("docker-registry") is None or shutil.which("skopeo") is None:
        pytest.skip("docker-registry and skopeo are needed (scripts/deps.sh installs them)")
    work = Path(tempfile.mkdtemp(prefix="hutch-sdk-registry", dir="/tmp"))
    addr = f"127.0.0.1:{free_port()}"
    config = work / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {work / 'storage'}\nhttp:\n  addr: {addr}\n"
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(tuple(addr.split(":")), timeout=1).close()  # type: ignore[arg-type]
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the registry did not start")
            time.sleep(0.05)
    try:
        yield addr
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def image_server(registry: str) -> Iterator[HutchServer]:
    """A server that reaches the test registry over plain HTTP, also as Docker Hub's mirror."""
    server = start_server(
        ["--warm-pool", "1", "--insecure-registry", registry,
         "--registry-mirror", f"docker.io=http://{registry}"]
    )
    yield server
    server.stop()


def push_layout(layout: Path, reference: str) -> None:
    """Copies the OCI layout ``layout`` (tag ``latest``) to ``reference`` in a test registry."""
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest",
         f"docker://{reference}"],
        check=True,
    )


def run_example(server: HutchServer, name: str, *args: str, timeout: float = 120) -> str:
    """Runs ``python/examples/<name>`` against ``server`` as a fresh tenant; returns stdout.

    The example gets the two variables ``python/README.md`` tells a reader to set, spelled as
    it spells them (``HUTCH_URL`` with ``/v1``, ``HUTCH_TOKEN``), and no other ``HUTCH_*`` or
    ``SANDBOX_API_*`` variable.
    """
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HUTCH_", "SANDBOX_API_"))},
        "HUTCH_URL": server.api_url,
        "HUTCH_TOKEN": server.token(new_tenant()),
    }
    out = subprocess.run(
        [sys.executable, str(REPO / "python" / "examples" / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, f"{name} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout
