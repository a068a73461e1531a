"""InteractiveSandboxSession: a persistent IPython kernel in its own session."""

from __future__ import annotations

from typing import Iterator

import pytest

from conftest import HutchServer, new_tenant, run_example
from hutch import InteractiveSandboxSession, InteractiveSettings, KernelType, SessionsClient
from hutch.interactive import parse_memory

ROUTE = ("POST", "/v1/sessions/{id}/interpreter/contexts")


def test_memory_settings_are_parsed() -> None:
    assert parse_memory("2GB") == 2048
    assert parse_memory("512MB") == 512
    assert parse_memory("1.5G") == 1536
    assert parse_memory(300) == 300
    with pytest.raises(ValueError):
        parse_memory("lots")
    with pytest.raises(ValueError):
        InteractiveSandboxSession(lang="cobol")


@pytest.fixture
def tenant_client(hutch_server: HutchServer) -> Iterator[SessionsClient]:
    with SessionsClient(hutch_server.api_url, bearer_token=hutch_server.token(new_tenant())) as c:
        yield c


@pytest.mark.requires_route(*ROUTE)
def test_state_persists_between_runs(tenant_client: SessionsClient) -> None:
    with InteractiveSandboxSession(lang="python", client=tenant_client) as session:
        session.run("value = 21 * 2")
        result = session.run("print(f'Result: {value}')")
        assert result.stdout == "Result: 42\n"
        assert result.exit_code == 0
        session_id = session.session.session_id if session.session else ""
    # Closing deletes the session.
    assert all(s.session_id != session_id for s in tenant_client.list_sessions(limit=100))


@pytest.mark.requires_route(*ROUTE)
def test_settings_reach_the_context(tenant_client: SessionsClient) -> None:
    settings = InteractiveSettings(
        kernel_type=KernelType.IPYTHON, max_memory="2GB", history_size=500, timeout=600
    )
    with InteractiveSandboxSession(
        lang="python", interactive_settings=settings, client=tenant_client
    ) as session:
        assert session.context is not None
        assert session.context.get("memoryMb") == 2048
        assert session.context.get("historySize") == 500
        assert session.context.get("timeout") == 600
        assert session.context.get("kernel") == "ipython"


@pytest.mark.requires_route(*ROUTE)
def test_errors_set_exit_code_and_keep_state(tenant_client: SessionsClient) -> None:
    with InteractiveSandboxSession(lang="python", client=tenant_client) as session:
        session.run("x = 10")
        result = session.run("y = x / 0")
        assert result.exit_code != 0
        assert "ZeroDivisionError" in result.stderr
        assert session.run("print(f'x is still: {x}')").stdout == "x is still: 10\n"


@pytest.mark.requires_route(*ROUTE)
def test_magics_and_values(tenant_client: SessionsClient) -> None:
    with InteractiveSandboxSession(lang="python", client=tenant_client) as session:
        session.run("alpha = 1")
        assert "alpha" in session.run("%who").stdout
        assert "/workspace" in session.run("%pwd").stdout  # the value's repr, as IPython shows it
        assert "hi" in session.run("!echo hi").stdout
        session.run("%reset -f")
        assert "NameError" in session.run("print(alpha)").stderr


@pytest.mark.requires_route(*ROUTE)
def test_libraries_already_present_are_fine(tenant_client: SessionsClient) -> None:
    with InteractiveSandboxSession(lang="python", client=tenant_client) as session:
        result = session.run("import numpy as np\nprint(np.arange(3).sum())", libraries=["numpy"])
        assert result.exit_code == 0, result.stderr
        assert result.stdout == "3\n"


@pytest.mark.requires_route(*ROUTE)
def test_example_interactive_session(hutch_server: HutchServer) -> None:
    out = run_example(hutch_server, "interactive_session.py", timeout=180)
    assert "Result: 42" in out
    assert "x is still: 10" in out
    assert "all examples passed" in out


@pytest.mark.requires_route(*ROUTE)
def test_a_library_that_cannot_be_installed_fails_the_cell(tenant_client: SessionsClient) -> None:
    with InteractiveSandboxSession(lang="python", client=tenant_client) as session:
        result = session.run("ran = True", libraries=["hutch-no-such-package-0"])
        assert result.exit_code != 0
        assert result.error is not None and result.error.name == "LibraryInstallError"
        assert "NameError" in session.run("print(ran)").stderr
