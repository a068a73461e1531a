"""Ports from outside: servers inside a session reached through the API and preview links."""

from __future__ import annotations

import time
from typing import Any, List

import httpx
import pytest
from websockets.sync.client import connect

from conftest import REPO
from hutch import SandboxOperationError, SessionNotFoundError

pytestmark = pytest.mark.requires_route("GET", "/v1/sessions/{id}/ports")

ECHO_APP = (REPO / "crates" / "hutch" / "tests" / "apps" / "echo.py").read_text()


def wait_listening(session: Any, *ports: int) -> List[Any]:
    deadline = time.monotonic() + 20
    while True:
        listening = session.ports.list()
        if all(any(p.port == port for p in listening) for port in ports):
            return listening
        assert time.monotonic() < deadline, f"never listening on {ports}: {listening}"
        time.sleep(0.1)


def serve_site(session: Any, port: int) -> None:
    """A static site served by Python's own server."""
    session.commands.run(
        "mkdir -p /workspace/site && echo 'hello from the session' > /workspace/site/index.html"
    )
    session.commands.run(
        f"cd /workspace/site && exec python3 -m http.server {port}", background=True, timeout=3600
    )
    wait_listening(session, port)


def serve_echo(session: Any, port: int) -> None:
    """The standard-library echo app (JSON of each request, WebSocket echo)."""
    session.commands.run("cat > /workspace/echo.py", stdin=ECHO_APP)
    session.commands.run(f"python3 /workspace/echo.py {port}", background=True, timeout=3600)
    wait_listening(session, port)


def test_a_web_server_in_the_session_is_listed_and_answers(session: Any) -> None:
    serve_site(session, 8000)
    site = next(p for p in session.ports.list() if p.port == 8000)
    assert site.address == "0.0.0.0"
    assert site.process == "python3"

    assert session.ports.url(8000, "/a/b") == (
        f"{session.handle.client.transport.api_url}/sessions/{session.session_id}/ports/8000/a/b"
    )
    page = session.ports.request(8000)
    assert page.status_code == 200
    assert page.text == "hello from the session\n"

    with pytest.raises(SandboxOperationError) as closed:
        session.ports.request(9999)
    assert closed.value.status_code == 502
    assert closed.value.code == "port_unreachable"


def test_a_link_opens_the_port_without_a_token_until_it_expires(session: Any) -> None:
    serve_site(session, 8000)
    link = session.ports.link(8000, ttl=2)
    assert link.url.endswith(link.path) and link.token in link.path
    assert link.host_url is None

    page = httpx.get(link.url)  # no Authorization header
    assert page.status_code == 200
    assert page.text == "hello from the session\n"

    time.sleep(3)
    expired = httpx.get(link.url)
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "link_expired"


def test_websockets_echo_through_the_port_and_a_link(session: Any) -> None:
    serve_echo(session, 8001)
    token = session.handle.client.transport.bearer_token
    with connect(
        session.ports.ws_url(8001, "/ws"),
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=10) == b"\x00\xff"

    link = session.ports.link(8001, ttl=60)
    with connect(link.url.replace("http://", "ws://", 1) + "ws") as ws:
        ws.send("through a link")
        assert ws.recv(timeout=10) == "through a link"


def test_another_tenant_gets_no_link_and_no_token_no_port(session: Any, hutch_server: Any) -> None:
    with hutch_server.client() as stranger:
        with pytest.raises(SessionNotFoundError):
            stranger.session(session.session_id).ports.link(8000)
    assert httpx.get(session.ports.url(8000)).status_code == 401


def test_bad_ports_and_ttls_are_refused_locally(session: Any) -> None:
    for port in (0, 70000, "80", True):
        with pytest.raises(ValueError):
            session.ports.url(port)
    with pytest.raises(ValueError):
        session.ports.link(8000, ttl=0)
    with pytest.raises(ValueError):
        session.ports.link(8000, ttl=86401)
