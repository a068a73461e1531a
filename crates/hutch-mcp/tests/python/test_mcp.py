"""hutch's MCP server driven by the official MCP Python client, over streamable HTTP
(``POST /v1/mcp``) and stdio (``hutch mcp``): the tools, the file resources, a matplotlib
figure as image content, tenancy, the API's bounds, the token the HTTP endpoint needs, and the
README's client configurations."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Dict

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import REPO, McpServer

pytestmark = pytest.mark.anyio

TOOLS = {
    "create_session", "list_sessions", "delete_session", "run_command", "run_code",
    "create_context", "execute", "read_file", "write_file", "list_files", "expose_port",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def connect(server: McpServer, transport: str, token: str) -> AsyncIterator[ClientSession]:
    """An MCP session over ``transport`` as the tenant of ``token``."""
    opener = server.http if transport == "http" else server.stdio
    async with opener(token) as session:
        yield session


def text_of(result: Any) -> str:
    """The text blocks of a tool result, joined."""
    return "\n".join(block.text for block in result.content if block.type == "text")


async def call(session: ClientSession, tool: str, **arguments: Any) -> Any:
    """Calls ``tool`` and checks it succeeded."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, f"{tool} failed: {text_of(result)}"
    return result


async def call_json(session: ClientSession, tool: str, **arguments: Any) -> Dict[str, Any]:
    """Calls a tool that answers JSON and decodes it."""
    return json.loads(text_of(await call(session, tool, **arguments)))


async def test_lists_every_tool_with_a_description_and_a_schema(hutch_server, transport, token):
    async with connect(hutch_server, transport, token) as session:
        tools = (await session.list_tools()).tools
        assert {tool.name for tool in tools} == TOOLS
        for tool in tools:
            assert len(tool.description or "") > 40, tool.name
            assert tool.input_schema["type"] == "object", tool.name
        run = next(tool for tool in tools if tool.name == "run_command")
        assert set(run.input_schema["required"]) == {"sessionId", "command"}
        assert "timeout" in run.input_schema["properties"]


async def test_every_tool_works_on_a_real_session(hutch_server, transport, token):
    async with connect(hutch_server, transport, token) as session:
        created = await call_json(session, "create_session", ttl=600)
        sid = created["sessionId"]
        assert created["status"] == "RUNNING"
        listed = await call_json(session, "list_sessions")
        assert [s["sessionId"] for s in listed["sessions"]] == [sid]

        ran = await call_json(session, "run_command", sessionId=sid, command="echo hi; exit 3")
        assert (ran["exitCode"], ran["stdout"]) == (3, "hi\n")
        code = await call_json(session, "run_code", sessionId=sid, language="python",
                               code="print(6 * 7)")
        assert code["stdout"] == "42\n"

        context = await call_json(session, "create_context", sessionId=sid, language="python")
        await call(session, "execute", sessionId=sid, contextId=context["id"], code="x = 20")
        cell = await call(session, "execute", sessionId=sid, contextId=context["id"],
                          code="print('x is', x)\nx + 22")
        assert "x is 20" in text_of(cell) and "42" in text_of(cell)

        written = await call_json(session, "write_file", sessionId=sid,
                                  path="/workspace/notes/a.txt", content="hello\n")
        assert [(f["path"], f["size"]) for f in written["files"]] == [("/workspace/notes/a.txt", 6)]
        assert text_of(await call(session, "read_file", sessionId=sid,
                                  path="/workspace/notes/a.txt")) == "hello\n"
        binary = bytes(range(256))
        await call(session, "write_file", sessionId=sid, path="/workspace/b.bin",
                   content=base64.b64encode(binary).decode(), encoding="base64")
        read = await call(session, "read_file", sessionId=sid, path="/workspace/b.bin",
                          encoding="base64")
        assert base64.b64decode(text_of(read)) == binary
        listing = await call_json(session, "list_files", sessionId=sid, depth=2)
        paths = {entry["path"] for entry in listing["entries"]}
        assert {"/workspace/notes/a.txt", "/workspace/b.bin"} <= paths

        # A web server started by a context outlives the cell; its port opens by a signed link.
        await call(session, "write_file", sessionId=sid, path="/workspace/site/index.html",
                   content="<h1>from the sandbox</h1>")
        await call(session, "execute", sessionId=sid, code=(
            "import subprocess\n"
            "server = subprocess.Popen(['python3', '-m', 'http.server', '8000', '-d', "
            "'/workspace/site'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"))
        link = await call_json(session, "expose_port", sessionId=sid, port=8000, ttl=60)
        assert link["url"].startswith(hutch_server.url + "/preview/")
        assert page(link["url"]) == "<h1>from the sandbox</h1>"

        deleted = await call_json(session, "delete_session", sessionId=sid)
        assert deleted["sessionId"] == sid
        assert (await call_json(session, "list_sessions"))["sessions"] == []


def page(url: str) -> str:
    """GETs ``url`` (no token), retrying while the server in the session starts."""
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


async def test_a_matplotlib_figure_comes_back_as_image_content(hutch_server, transport, token):
    async with connect(hutch_server, transport, token) as session:
        sid = (await call_json(session, "create_session", ttl=600))["sessionId"]
        result = await call(session, "execute", sessionId=sid, code=(
            "import matplotlib.pyplot as plt\n"
            "plt.plot([1, 2, 3], [1, 4, 9])\n"
            "plt.title('squares')\n"
            "print('plotted')"))
        images = [block for block in result.content if block.type == "image"]
        assert len(images) == 1, result.content
        assert images[0].mime_type == "image/png"
        assert base64.b64decode(images[0].data).startswith(b"\x89PNG\r\n\x1a\n")
        assert "plotted" in text_of(result)


async def test_a_sessions_files_are_resources(hutch_server, transport, token):
    async with connect(hutch_server, transport, token) as session:
        sid = (await call_json(session, "create_session", ttl=600))["sessionId"]
        await call(session, "write_file", sessionId=sid, path="/workspace/data/report.md",
                   content="# results\n")
        resources = (await session.list_resources()).resources
        workspace = f"hutch://sessions/{sid}/files/workspace"
        assert [str(r.uri) for r in resources] == [workspace]
        templates = (await session.list_resource_templates()).resource_templates
        assert templates[0].uri_template == "hutch://sessions/{sessionId}/files/{+path}"

        listing = json.loads((await session.read_resource(workspace)).contents[0].text)
        assert [e["uri"] for e in listing["entries"]] == [f"{workspace}/data"]
        report = await session.read_resource(f"{workspace}/data/report.md")
        assert report.contents[0].text == "# results\n"
        with pytest.raises(MCPError):
            await session.read_resource(f"{workspace}/missing.txt")


async def test_errors_name_the_apis_code_and_its_bounds_hold(hutch_server, transport, token):
    async with connect(hutch_server, transport, token) as session:
        sid = (await call_json(session, "create_session", ttl=600))["sessionId"]
        too_long = await session.call_tool(
            "run_command", {"sessionId": sid, "command": "true", "timeout": 3601})
        assert too_long.is_error and "400 invalid_request" in text_of(too_long)
        timed_out = await call_json(session, "run_command", sessionId=sid, command="sleep 5",
                                    timeout=0.5)
        assert timed_out["timedOut"] is True
        missing = await session.call_tool(
            "read_file", {"sessionId": sid, "path": "/workspace/nothing"})
        assert missing.is_error and "404 file_not_found" in text_of(missing)
        cell = await session.call_tool("execute", {"sessionId": sid, "code": "1 / 0"})
        assert cell.is_error and "ZeroDivisionError" in text_of(cell)


async def test_a_tenant_reaches_only_its_own_sessions(hutch_server, transport, token):
    other = hutch_server.token("mcp-other-tenant")
    async with connect(hutch_server, transport, token) as mine:
        sid = (await call_json(mine, "create_session", ttl=600))["sessionId"]
        async with connect(hutch_server, transport, other) as theirs:
            assert sid not in text_of(await call(theirs, "list_sessions"))
            refused = await theirs.call_tool(
                "run_command", {"sessionId": sid, "command": "echo hi"})
            assert refused.is_error and "404 session_not_found" in text_of(refused)
        await call(mine, "delete_session", sessionId=sid)


async def test_http_refuses_a_request_without_a_valid_token(hutch_server):
    initialize = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "1"}},
    }
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(timeout=30) as http:
        for auth in [None, "Bearer not-a-token"]:
            sent = dict(headers, **({"Authorization": auth} if auth else {}))
            response = await http.post(hutch_server.mcp_url, json=initialize, headers=sent)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
    # The official client cannot even initialise.
    with pytest.raises(BaseException) as refused:
        async with hutch_server.http("not-a-token"):
            pass
    assert any(isinstance(error, MCPError) for error in leaves(refused.value)), refused.value


async def test_http_answers_a_body_that_is_no_mcp_message_with_a_json_rpc_error(hutch_server, token):
    headers = {
        "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
    }
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        # Not JSON: JSON-RPC's parse error; JSON but no message: its invalid request.
        for body, code in [(b"{bad", -32700), (b'{"foo": 1}', -32600), (b"[]", -32600)]:
            response = await http.post(hutch_server.mcp_url, content=body)
            assert response.status_code == 400, response.text
            answer = response.json()
            assert answer["jsonrpc"] == "2.0" and answer["id"] is None
            assert answer["error"]["code"] == code, answer
        # A well-formed message still goes through.
        listed = await http.post(
            hutch_server.mcp_url, json={"jsonrpc": "2.0", "id": 7, "method": "tools/list"},
            headers={"MCP-Protocol-Version": "2025-06-18"},
        )
        assert listed.status_code == 200, listed.text
        assert {tool["name"] for tool in listed.json()["result"]["tools"]} == TOOLS
        # Another media type is still the transport's 415.
        wrong = await http.post(hutch_server.mcp_url, content=b"{}",
                                headers={"Content-Type": "text/plain"})
        assert wrong.status_code == 415


def leaves(error: BaseException) -> list:
    """The errors inside (nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def readme_configs() -> list:
    """The ``mcpServers`` JSON blocks of the README's MCP section, parsed."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## MCP\n", 1)[1].split("\n## ", 1)[0]
    return [json.loads(block.split("\n```", 1)[0]) for block in section.split("```json\n")[1:]]


async def test_the_readmes_client_configurations_work_as_pasted(hutch_server, token):
    stdio_config, http_config = (config["mcpServers"]["hutch"] for config in readme_configs())
    # stdio: the command as given, with `hutch` on the PATH and a real token in its env.
    env = dict(stdio_config["env"], HUTCH_URL=hutch_server.url, HUTCH_TOKEN=token,
               PATH=f"{Path(hutch_server.server.binary).parent}:{os.environ['PATH']}")
    params = StdioServerParameters(command=stdio_config["command"], args=stdio_config["args"],
                                   env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            assert {tool.name for tool in (await session.list_tools()).tools} == TOOLS
    # HTTP: the URL's path on this server, the header with a real token.
    assert http_config["url"].startswith("http://127.0.0.1:7420/")
    url = hutch_server.url + http_config["url"].removeprefix("http://127.0.0.1:7420")
    headers = {name: value.replace("<token>", token) for name, value in http_config["headers"].items()}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                assert {tool.name for tool in (await session.list_tools()).tools} == TOOLS
