"""Storage contexts and their synchronisation into sessions."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any, List

import pytest

from conftest import HutchServer, run_example
from hutch import (
    ConflictError,
    ContextNotFoundError,
    ContextSync,
    ContextSyncResult,
    SandboxAPIError,
    SessionsClient,
)

pytestmark = pytest.mark.requires_route("POST", "/v1/contexts")


def _name() -> str:
    return f"ctx-{uuid.uuid4().hex[:10]}"


def _finished(sync: Any) -> ContextSyncResult:
    """The result of ``session.context.sync()``: the blocking client's is waited for; the async
    client's coroutine has already run to its end."""
    return sync.wait() if isinstance(sync, ContextSync) else sync


def test_create_get_list_delete(client: SessionsClient) -> None:
    ctx = client.contexts.create(_name())
    assert ctx.version == 0
    assert client.contexts.get(ctx.id) == ctx
    assert [c.id for c in client.contexts.list()] == [ctx.id]
    client.contexts.delete(ctx.id)
    with pytest.raises(ContextNotFoundError) as info:
        client.contexts.get(ctx.id)
    assert info.value.status_code == 404


def test_duplicate_name_is_a_conflict(client: SessionsClient) -> None:
    name = _name()
    client.contexts.create(name)
    with pytest.raises(SandboxAPIError) as info:
        client.contexts.create(name)
    assert info.value.status_code == 409


def test_sync_uploads_and_a_new_session_downloads(client: SessionsClient) -> None:
    ctx = client.contexts.create(_name())
    bind = [{"context_id": ctx.id, "path": "/workspace/data"}]
    first = client.create_session(ttl=600, context_syncs=bind)
    first.commands.run("echo one > /workspace/data/f.txt")
    result = _finished(first.context.sync())
    assert result.success, result.error_message
    assert result.tasks and result.tasks[0].task_type == "upload"
    info = first.context.info(context_id=ctx.id, task_type="upload")
    assert info.context_status_data[-1].status == "Success"
    assert client.contexts.get(ctx.id).version >= 1
    second = client.create_session(ttl=600, context_syncs=bind)
    assert second.commands.run("cat /workspace/data/f.txt").stdout == "one\n"


def test_sync_of_the_blocking_client_is_a_coroutine(sync_client: SessionsClient) -> None:
    ctx = sync_client.contexts.create(_name())
    bind = [{"context_id": ctx.id, "path": "/workspace/d"}]
    session = sync_client.create_session(ttl=600, context_syncs=bind)
    session.commands.run("echo kept > /workspace/d/f.txt")

    assert asyncio.run(session.context.sync()).success

    async def await_gather_and_create_task() -> List[ContextSyncResult]:
        awaited = await session.context.sync()
        task = asyncio.create_task(session.context.sync(retry_interval=100))
        gathered = await asyncio.gather(session.context.sync(retry_interval=100), task)
        return [awaited, *gathered]

    results = asyncio.run(await_gather_and_create_task())
    assert [r.success for r in results] == [True, True, True]
    assert sync_client.contexts.get(ctx.id).version >= 2


def test_a_sync_with_nothing_bound_is_refused(client: SessionsClient) -> None:
    session = client.create_session(ttl=600)
    with pytest.raises(ConflictError) as info:
        _finished(session.context.sync())
    assert info.value.code == "conflict"
    called: List[bool] = []
    with pytest.raises(ConflictError):
        session.context.sync(callback=called.append)
    assert called == []


def test_sync_with_callback_returns_at_once(client: SessionsClient) -> None:
    ctx = client.contexts.create(_name())
    session = client.create_session(ttl=600, context_syncs=[{"context_id": ctx.id, "path": "/workspace/d"}])
    done = threading.Event()
    outcome: List[bool] = []

    def callback(ok: bool) -> None:
        outcome.append(ok)
        done.set()

    started = session.context.sync(callback=callback, retry_interval=100)
    assert started.success
    assert done.wait(60)
    assert outcome == [True]


def test_example_storage_contexts(hutch_server: HutchServer) -> None:
    out = run_example(hutch_server, "storage_contexts.py")
    assert "restored: kept" in out
