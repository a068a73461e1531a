"""What only the async client shows: many calls at once from one event loop, streams as async
iterators, and coroutines that compose with asyncio."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, List, Tuple

import pytest

from conftest import HutchServer, new_tenant
from hutch import AsyncSessionsClient, ExecutionTimeoutError, OutputChunk
from hutch.storage import AsyncContextManager


def _run(server: HutchServer, body: Any) -> Any:
    """Runs ``body(client)`` with an async client of a fresh tenant, deleting its sessions after."""

    async def main() -> Any:
        async with AsyncSessionsClient(server.api_url, bearer_token=server.token(new_tenant())) as client:
            try:
                return await body(client)
            finally:
                page = await client.list_sessions(limit=100)
                await asyncio.gather(*(client.delete_session(s.session_id) for s in page))

    return asyncio.run(main())


def test_executions_on_several_contexts_run_at_once(hutch_server: HutchServer) -> None:
    async def body(client: AsyncSessionsClient) -> List[str]:
        session = await client.create_session(ttl=600)
        interpreter = session.code_interpreter()
        contexts = await asyncio.gather(*(interpreter.create_context() for _ in range(4)))
        # Each cell tells when it slept (the workers share the sandbox's clock), so that
        # overlap is seen however long a loaded machine takes to start them.
        code = "import time; s = time.time(); time.sleep(2); print({}, s, time.time())"
        executions = await asyncio.gather(
            *(
                interpreter.execute(code.format(i), context_id=c.id)
                for i, c in enumerate(contexts)
            )
        )
        return [e.stdout for e in executions]

    outputs = _run(hutch_server, body)
    slept = [line.split() for line in outputs]
    assert [int(s[0]) for s in slept] == [0, 1, 2, 3], outputs
    starts = [float(s[1]) for s in slept]
    ends = [float(s[2]) for s in slept]
    assert max(starts) < min(ends), f"the four 2 s cells did not overlap: {outputs}"


def test_a_stream_yields_output_before_the_command_ends(hutch_server: HutchServer) -> None:
    async def body(client: AsyncSessionsClient) -> List[Tuple[float, OutputChunk]]:
        session = await client.create_session(ttl=600)
        started = time.monotonic()
        return [
            (time.monotonic() - started, chunk)
            async for chunk in session.commands.stream("echo first; sleep 2; echo second >&2")
        ]

    chunks = _run(hutch_server, body)
    assert [c for _, c in chunks] == [OutputChunk("stdout", "first\n"), OutputChunk("stderr", "second\n")]
    assert chunks[0][0] < chunks[1][0] - 1


def test_a_timeout_in_one_task_leaves_the_others_alone(hutch_server: HutchServer) -> None:
    async def body(client: AsyncSessionsClient) -> List[Any]:
        session = await client.create_session(ttl=600)
        interpreter = session.code_interpreter()
        ctx = await interpreter.create_context()
        return await asyncio.gather(
            interpreter.execute("import time; time.sleep(30)", context_id=ctx.id, timeout=1),
            session.commands.run("echo fine"),
            return_exceptions=True,
        )

    slow, fine = _run(hutch_server, body)
    assert isinstance(slow, ExecutionTimeoutError)
    assert fine.stdout == "fine\n"


def test_storage_sync_of_the_async_client_is_a_coroutine_function() -> None:
    assert inspect.iscoroutinefunction(AsyncContextManager.sync)


def test_the_async_client_needs_an_address_and_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HUTCH_URL", "HUTCH_TOKEN", "SANDBOX_API_URL", "SANDBOX_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError):
        AsyncSessionsClient()
