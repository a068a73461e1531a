"""SessionsClient against a real server, following the sessions SDK guide."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import REPO, HutchServer, new_tenant, run_example, start_server
from hutch import (
    RateLimitError,
    SandboxAPIError,
    SandboxConnectionError,
    SandboxOperationError,
    SessionInfo,
    SessionNotFoundError,
    SessionPausedError,
    SessionsClient,
    SessionStatus,
    UnauthorizedError,
)


def test_create_with_defaults_returns_a_running_session(client: SessionsClient) -> None:
    session = client.create_session()
    assert isinstance(session, SessionInfo)
    assert uuid.UUID(session.session_id)
    assert session.status is SessionStatus.RUNNING
    assert session.image == "default"
    assert session.metadata == {}
    assert session.created_at.tzinfo is not None
    assert session.expires_at > session.created_at
    assert session.resources is not None and session.resources.memory_mb > 0
    assert session.network == {"egress": "none", "allow": [], "deny": []}
    assert not session.is_expired()


def test_create_with_every_parameter(client: SessionsClient) -> None:
    session = client.create_session(
        ttl=7200, image="default", metadata={"user": "alice", "project": "test"}
    )
    assert session.metadata == {"user": "alice", "project": "test"}
    lifetime = (session.expires_at - session.created_at).total_seconds()
    assert 7190 <= lifetime <= 7210
    assert session.expires_at > datetime.now(timezone.utc)


def test_get_returns_the_same_session(client: SessionsClient) -> None:
    created = client.create_session(ttl=600, metadata={"k": "v"})
    fetched = client.get_session(created.session_id)
    assert fetched == created


def test_list_and_paginate(client: SessionsClient) -> None:
    ids = [client.create_session(ttl=600).session_id for _ in range(3)]
    everything = client.list_sessions(limit=100)
    assert everything.total == 3
    assert [s.session_id for s in everything] == ids  # oldest first
    first = client.list_sessions(limit=2, offset=0)
    second = client.list_sessions(limit=2, offset=2)
    assert (first.limit, first.offset, len(first)) == (2, 0, 2)
    assert (second.offset, len(second)) == (2, 1)
    assert [s.session_id for s in first.sessions + second.sessions] == ids


def test_tenants_do_not_see_each_other(hutch_server: HutchServer, client: SessionsClient) -> None:
    mine = client.create_session(ttl=600)
    with hutch_server.client() as other:
        assert other.list_sessions().total == 0
        with pytest.raises(SessionNotFoundError):
            other.get_session(mine.session_id)


def test_update_ttl_and_metadata(client: SessionsClient) -> None:
    session = client.create_session(ttl=600, metadata={"a": "1"})
    updated = client.update_session(session.session_id, ttl=3600, metadata={"b": "2"})
    assert updated.metadata == {"b": "2"}
    assert updated.expires_at > session.expires_at
    assert client.get_session(session.session_id).metadata == {"b": "2"}
    with pytest.raises(ValueError):
        client.update_session(session.session_id, ttl=10)


def test_delete_then_get_is_not_found(client: SessionsClient) -> None:
    session = client.create_session(ttl=600)
    gone = client.delete_session(session.session_id)
    assert gone.session_id == session.session_id
    with pytest.raises(SessionNotFoundError) as info:
        client.get_session(session.session_id)
    assert info.value.status_code == 404
    assert info.value.code == "session_not_found"
    assert info.value.response is not None and info.value.response.status_code == 404
    assert client.list_sessions().total == 0


def test_unknown_session_is_not_found(client: SessionsClient) -> None:
    unknown = str(uuid.uuid4())
    with pytest.raises(SessionNotFoundError):
        client.get_session(unknown)
    with pytest.raises(SessionNotFoundError):
        client.delete_session(unknown)


@pytest.mark.parametrize("ttl", [0, 59, 28801, -1])
def test_bad_ttl_is_refused_before_any_request(client: SessionsClient, ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl"):
        client.create_session(ttl=ttl)
    assert client.list_sessions().total == 0


def test_ttl_bounds_are_accepted(client: SessionsClient) -> None:
    assert client.create_session(ttl=60).status is SessionStatus.RUNNING
    assert client.create_session(ttl=28800).status is SessionStatus.RUNNING


def test_bad_arguments_are_value_errors(client: SessionsClient) -> None:
    with pytest.raises(ValueError, match="limit"):
        client.list_sessions(limit=0)
    with pytest.raises(ValueError, match="limit"):
        client.list_sessions(limit=101)
    with pytest.raises(ValueError, match="offset"):
        client.list_sessions(offset=-1)
    with pytest.raises(ValueError, match="UUID"):
        client.get_session("not-a-uuid")
    with pytest.raises(ValueError, match="metadata"):
        client.create_session(metadata={"n": 1})  # type: ignore[dict-item]


def test_server_side_validation_is_an_operation_error(client: SessionsClient) -> None:
    with pytest.raises(SandboxOperationError) as info:
        client.create_session(image="no-such-image")
    assert info.value.status_code is not None and 400 <= info.value.status_code < 500
    assert info.value.code is not None
    assert info.value.message


def test_wrong_token_is_unauthorized(hutch_server: HutchServer) -> None:
    with SessionsClient(hutch_server.api_url, bearer_token="not.a.token") as bad:
        with pytest.raises(UnauthorizedError) as info:
            bad.list_sessions()
    assert info.value.status_code == 401
    assert info.value.code == "unauthorized"
    assert isinstance(info.value, SandboxAPIError)


def test_unreachable_server_is_a_connection_error() -> None:
    with SessionsClient("http://127.0.0.1:9/v1", bearer_token="x", timeout=2) as c:
        with pytest.raises(SandboxConnectionError):
            c.list_sessions()


def test_api_url_with_or_without_v1(hutch_server: HutchServer) -> None:
    token = hutch_server.token(new_tenant())
    for url in (hutch_server.url, hutch_server.api_url, hutch_server.api_url + "/"):
        with SessionsClient(url, bearer_token=token) as c:
            assert c.list_sessions().total == 0
            assert c.health()


def test_rate_limit_error_carries_the_headers() -> None:
    server = start_server(["--warm-pool", "0", "--rate-lifecycle", "3/m,burst=3"])
    try:
        with server.client() as c:
            for _ in range(3):
                c.list_sessions()
            with pytest.raises(RateLimitError) as info:
                c.list_sessions()
        e = info.value
        assert e.status_code == 429
        assert e.code == "rate_limited"
        assert e.limit == 3
        assert e.remaining == 0
        assert e.retry_after is not None and 1 <= e.retry_after <= 60
        assert e.reset is not None and e.reset >= 0
    finally:
        server.stop()


@pytest.mark.requires_route("POST", "/v1/sessions/{id}/pause")
def test_pause_and_resume(client: SessionsClient) -> None:
    session = client.create_session(ttl=600)
    assert client.pause_session(session.session_id).status is SessionStatus.PAUSED
    assert client.get_session(session.session_id).status is SessionStatus.PAUSED
    assert client.resume_session(session.session_id).status is SessionStatus.RUNNING
    assert session.commands.run("echo awake").stdout == "awake\n"


@pytest.mark.requires_route("POST", "/v1/sessions/{id}/pause")
def test_a_paused_session_refuses_work_until_resumed(client: SessionsClient) -> None:
    session = client.create_session(ttl=600)
    paused = session.pause()
    assert paused.status is SessionStatus.PAUSED and paused.paused_at is not None
    assert [s.session_id for s in client.list_sessions(status=SessionStatus.PAUSED)] == [
        session.session_id
    ]
    with pytest.raises(SessionPausedError, match="resume"):
        session.commands.run("true")
    assert session.stats().pids >= 1
    assert session.resume().paused_at is None
    assert session.commands.run("echo back").stdout == "back\n"


@pytest.mark.requires_route("POST", "/v1/sessions/{id}/pause")
def test_auto_pause_is_checked_and_shown(client: SessionsClient) -> None:
    with pytest.raises(ValueError, match="auto_pause"):
        client.create_session(auto_pause=5)
    with pytest.raises(ValueError, match="keep_awake"):
        client.create_session(keep_awake=True)
    session = client.create_session(ttl=600, auto_pause=60, keep_awake=True)
    assert session.auto_pause == {"idleSeconds": 60, "keepAwake": True}


def test_session_handle_without_a_request(client: SessionsClient) -> None:
    created = client.create_session(ttl=600)
    handle = client.session(created.session_id)
    assert handle.session_id == created.session_id
    assert handle.refresh() == created
    handle.delete()
    with pytest.raises(SessionNotFoundError):
        handle.refresh()


def test_example_sessions_sdk(hutch_server: HutchServer) -> None:
    out = run_example(hutch_server, "sessions_sdk.py")
    assert "all examples passed" in out


def test_example_quick_start(hutch_server: HutchServer) -> None:
    out = run_example(hutch_server, "quick_start.py")
    assert "deleted" in out


def test_every_example_is_run_by_a_test() -> None:
    tests = "".join(path.read_text() for path in Path(__file__).parent.glob("test_*.py"))
    examples = sorted((REPO / "python" / "examples").glob("*.py"))
    assert examples
    for example in examples:
        assert f'run_example(hutch_server, "{example.name}"' in tests, example.name


def test_network_policies_are_checked_before_any_request(client: SessionsClient) -> None:
    with pytest.raises(ValueError, match="egress"):
        client.create_session(network="some")
    with pytest.raises(ValueError, match="only with egress"):
        client.create_session(network={"egress": "all", "allow": ["pypi.org"]})
    with pytest.raises(ValueError, match="list of strings"):
        client.create_session(network={"egress": "allow", "allow": "pypi.org"})
    with pytest.raises(ValueError, match="unknown"):
        client.create_session(network={"egres": "all"})


def test_network_beyond_the_servers_ceiling_is_forbidden(client: SessionsClient) -> None:
    # The test server allows no network: egress none works, anything more is a 403.
    session = client.create_session(network="none")
    assert session.status == SessionStatus.RUNNING
    assert client.get_session(session.session_id).network["egress"] == "none"
    with pytest.raises(SandboxOperationError) as info:
        client.create_session(network={"egress": "allow", "allow": ["pypi.org"]})
    assert info.value.status_code == 403
    assert info.value.code == "forbidden"
    assert "at most" in info.value.message
    with pytest.raises(SandboxOperationError) as info:
        session.update_network("all")
    assert info.value.status_code == 403
