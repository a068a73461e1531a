"""Storage contexts: named persistent storage of a tenant, synchronised into sessions.

``client.contexts`` creates, lists and deletes them (``/v1/contexts``); a session binds them
to paths with ``create_session(context_syncs=[{"context_id": …, "path": …}])``, and
``session.context`` shows (``info``) and triggers (``sync``) the transfers::

    ctx = client.contexts.create("project-cache")
    session = client.create_session(context_syncs=[{"context_id": ctx.id, "path": "/workspace/cache"}])
    ...
    result = session.context.sync().wait()          # blocking
    result = asyncio.run(session.context.sync())    # a coroutine: await, gather, create_task
    session.context.sync(callback=lambda ok: print("synced" if ok else "failed"))

On the async client (``AsyncSessionsClient``) ``session.context.sync()`` is an ``async def``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Dict, Generator, List, Mapping, Optional, Tuple

import httpx

from ._http import AsyncTransport, Call, Transport
from .errors import SandboxAPIError
from .sessions import parse_time

__all__ = [
    "StorageContext",
    "StorageContextList",
    "StorageContexts",
    "AsyncStorageContexts",
    "ContextStatusData",
    "ContextInfoResult",
    "ContextSyncResult",
    "ContextSync",
    "ContextManager",
    "AsyncContextManager",
]

FINAL_STATUSES = ("Success", "Failed")


@dataclass
class StorageContext:
    """A storage context."""

    id: str
    name: str
    version: int = 0
    size_bytes: int = 0
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "StorageContext":
        """Parses the wire form."""
        created = data.get("createdAt")
        updated = data.get("updatedAt")
        return cls(
            id=str(data["id"]),
            name=str(data.get("name", "")),
            version=int(data.get("version", 0) or 0),
            size_bytes=int(data.get("sizeBytes", 0) or 0),
            created_at=parse_time(created) if isinstance(created, str) else None,
            updated_at=parse_time(updated) if isinstance(updated, str) else None,
        )


@dataclass
class StorageContextList:
    """One page of storage contexts."""

    contexts: List[StorageContext]
    total: int
    limit: int
    offset: int

    def __iter__(self) -> Any:
        return iter(self.contexts)

    def __len__(self) -> int:
        return len(self.contexts)


class _StorageContextCalls:
    """The requests of the storage contexts API, shared by both faces."""

    def _create_call(self, name: str) -> Call[StorageContext]:
        if not name:
            raise ValueError("name must not be empty")
        return Call("POST", "/contexts", json_body={"name": name}, parse=StorageContext.from_json)

    def _get_call(self, context_id: str) -> Call[StorageContext]:
        return Call("GET", f"/contexts/{context_id}", parse=StorageContext.from_json)

    def _list_call(self, limit: int, offset: int) -> Call[StorageContextList]:
        if not 1 <= limit <= 100:
            raise ValueError(f"limit must be between 1 and 100, got {limit}")
        if offset < 0:
            raise ValueError(f"offset must be 0 or more, got {offset}")

        def parse(data: Any) -> StorageContextList:
            page: Dict[str, Any] = data if isinstance(data, dict) else {"contexts": data or []}
            items: List[Any] = page.get("contexts", [])
            return StorageContextList(
                contexts=[StorageContext.from_json(c) for c in items],
                total=int(page.get("total", len(items))),
                limit=int(page.get("limit", limit)),
                offset=int(page.get("offset", offset)),
            )

        return Call("GET", "/contexts", params={"limit": limit, "offset": offset}, parse=parse)

    def _delete_call(self, context_id: str) -> Call[None]:
        return Call("DELETE", f"/contexts/{context_id}", parse=lambda _: None)


class StorageContexts(_StorageContextCalls):
    """The caller's storage contexts (``/contexts``)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def create(self, name: str) -> StorageContext:
        """Creates an empty context; ``name`` is unique per tenant (letters, digits, ``._-``)."""
        return self._transport.call(self._create_call(name))

    def get(self, context_id: str) -> StorageContext:
        """One context."""
        return self._transport.call(self._get_call(context_id))

    def list(self, limit: int = 20, offset: int = 0) -> StorageContextList:
        """One page of the caller's contexts, oldest first."""
        return self._transport.call(self._list_call(limit, offset))

    def delete(self, context_id: str) -> None:
        """Deletes a context and its content."""
        self._transport.call(self._delete_call(context_id))


class AsyncStorageContexts(_StorageContextCalls):
    """:class:`StorageContexts` for event loops."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def create(self, name: str) -> StorageContext:
        """Creates an empty context; ``name`` is unique per tenant."""
        return await self._transport.call(self._create_call(name))

    async def get(self, context_id: str) -> StorageContext:
        """One context."""
        return await self._transport.call(self._get_call(context_id))

    async def list(self, limit: int = 20, offset: int = 0) -> StorageContextList:
        """One page of the caller's contexts, oldest first."""
        return await self._transport.call(self._list_call(limit, offset))

    async def delete(self, context_id: str) -> None:
        """Deletes a context and its content."""
        await self._transport.call(self._delete_call(context_id))


@dataclass
class ContextStatusData:
    """One transfer between a session and a storage context."""

    context_id: str
    path: str
    error_message: str
    status: str
    """``Pending``, ``Running``, ``Success`` or ``Failed``."""
    start_time: int
    """Unix seconds."""
    finish_time: int
    """Unix seconds; 0 while it runs."""
    task_type: str
    """``upload`` or ``download``."""
    version: int = 0

    @property
    def finished(self) -> bool:
        """Whether the task is done, well or not."""
        return self.status in FINAL_STATUSES

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ContextStatusData":
        """Parses the wire form."""
        return cls(
            context_id=str(data.get("contextId", "")),
            path=str(data.get("path", "")),
            error_message=str(data.get("errorMessage", "") or ""),
            status=str(data.get("status", "")),
            start_time=int(data.get("startTime", 0) or 0),
            finish_time=int(data.get("finishTime", 0) or 0),
            task_type=str(data.get("taskType", "")),
            version=int(data.get("version", 0) or 0),
        )


@dataclass
class ContextInfoResult:
    """The answer of ``session.context.info()``."""

    context_status_data: List[ContextStatusData] = field(default_factory=list)
    success: bool = True
    request_id: str = ""
    error_message: str = ""


@dataclass
class ContextSyncResult:
    """The outcome of a sync: ``success`` is whether every task it started succeeded (or, when
    returned by ``sync(callback=…)``, whether the sync was started)."""

    success: bool
    request_id: str = ""
    tasks: List[ContextStatusData] = field(default_factory=list)
    error_message: str = ""


@dataclass
class SyncPlan:
    """What a sync waits for: the tasks it started and how to poll for them."""

    request_id: str
    tasks: List[ContextStatusData]
    max_retries: int
    retry_interval: int
    """Milliseconds between polls."""

    def settled(self, info: ContextInfoResult) -> Optional[ContextSyncResult]:
        """The sync's result when every task it started finished in ``info``, else ``None``."""
        latest: List[ContextStatusData] = []
        for started in self.tasks:
            match = [
                t
                for t in info.context_status_data
                if t.context_id == started.context_id
                and t.path == started.path
                and t.task_type == started.task_type
                and t.start_time >= started.start_time
            ]
            if not match:
                return None
            latest.append(match[-1])
        if not all(t.finished for t in latest):
            return None
        failed = [t for t in latest if t.status != "Success"]
        return ContextSyncResult(
            success=not failed,
            request_id=self.request_id,
            tasks=latest,
            error_message="; ".join(t.error_message for t in failed if t.error_message),
        )

    @property
    def polls(self) -> int:
        """How many polls at most."""
        return max(self.max_retries, 1)

    def nothing_to_do(self) -> Optional[ContextSyncResult]:
        """The result of a sync that started no task."""
        return None if self.tasks else ContextSyncResult(success=True, request_id=self.request_id)

    def started(self) -> ContextSyncResult:
        """What ``sync(callback=…)`` returns at once: the sync started."""
        return ContextSyncResult(success=True, request_id=self.request_id, tasks=self.tasks)

    def timed_out(self) -> ContextSyncResult:
        """The result when the tasks did not finish within ``max_retries`` polls."""
        return ContextSyncResult(
            success=False,
            request_id=self.request_id,
            tasks=self.tasks,
            error_message=f"the sync did not finish after {self.max_retries} polls",
        )


SyncArgs = Tuple[Optional[str], Optional[str], Optional[str], int, int]


class _ContextCalls:
    """The requests of one session's storage-context transfers, shared by both faces."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id

    def _info_call(
        self, context_id: Optional[str], path: Optional[str], task_type: Optional[str]
    ) -> Call[ContextInfoResult]:
        def parse(response: httpx.Response) -> ContextInfoResult:
            data = response.json() if response.content else {}
            items = data.get("contextStatusData", []) if isinstance(data, dict) else []
            return ContextInfoResult(
                context_status_data=[ContextStatusData.from_json(t) for t in items],
                success=True,
                request_id=response.headers.get("x-request-id", ""),
            )

        return Call(
            "GET",
            f"/sessions/{self.session_id}/context/info",
            params={"contextId": context_id, "path": path, "taskType": task_type},
            parse=parse,
            raw=True,
        )

    def _sync_call(self, args: SyncArgs) -> Call[SyncPlan]:
        context_id, path, mode, max_retries, retry_interval = args
        body: Dict[str, Any] = {}
        if context_id is not None:
            body["contextId"] = context_id
        if path is not None:
            body["path"] = path
        if mode is not None:
            body["mode"] = mode

        def parse(response: httpx.Response) -> SyncPlan:
            data = response.json() if response.content else {}
            tasks = data.get("tasks") if isinstance(data, dict) else None
            return SyncPlan(
                response.headers.get("x-request-id", ""),
                [ContextStatusData.from_json(t) for t in tasks or []],
                max_retries,
                retry_interval,
            )

        return Call(
            "POST", f"/sessions/{self.session_id}/context/sync", json_body=body, parse=parse, raw=True
        )


class ContextSync(Coroutine):  # type: ignore[type-arg]
    """A sync of the blocking client, not started yet: ``.wait()`` runs it and blocks; as a
    coroutine (``await``, ``asyncio.run``, ``gather``, ``create_task``) it runs without
    blocking the event loop. Either way the result is a :class:`ContextSyncResult`."""

    def __init__(self, manager: "ContextManager", args: SyncArgs) -> None:
        self._manager = manager
        self._args = args
        self._coroutine: Optional[Any] = None

    def wait(self) -> ContextSyncResult:
        """Starts the sync and polls ``context/info`` until every task finished (or
        ``max_retries`` polls)."""
        return self._manager._run(self._args)

    async def _run_async(self) -> ContextSyncResult:
        return await asyncio.to_thread(self._manager._run, self._args)

    def _inner(self) -> Any:
        if self._coroutine is None:
            self._coroutine = self._run_async()
        return self._coroutine

    def send(self, value: Any) -> Any:
        """Part of the coroutine protocol."""
        return self._inner().send(value)

    def throw(self, *args: Any) -> Any:
        """Part of the coroutine protocol."""
        return self._inner().throw(*args)

    def close(self) -> None:
        """Part of the coroutine protocol."""
        if self._coroutine is not None:
            self._coroutine.close()

    def __await__(self) -> Generator[Any, None, ContextSyncResult]:
        return self._inner().__await__()  # type: ignore[no-any-return]


class ContextManager(_ContextCalls):
    """Storage-context synchronisation of one session (``session.context``)."""

    def __init__(self, transport: Transport, session_id: str) -> None:
        super().__init__(session_id)
        self._transport = transport

    def info(
        self,
        context_id: Optional[str] = None,
        path: Optional[str] = None,
        task_type: Optional[str] = None,
    ) -> ContextInfoResult:
        """The session's transfer tasks, oldest first, filtered by context, path or type."""
        return self._transport.call(self._info_call(context_id, path, task_type))

    def _poll(self, plan: SyncPlan) -> ContextSyncResult:
        done = plan.nothing_to_do()
        if done is not None:
            return done
        for attempt in range(plan.polls):
            result = plan.settled(self.info())
            if result is not None:
                return result
            if attempt + 1 < plan.max_retries:
                time.sleep(plan.retry_interval / 1000)
        return plan.timed_out()

    def _run(self, args: SyncArgs) -> ContextSyncResult:
        return self._poll(self._transport.call(self._sync_call(args)))

    def sync(
        self,
        context_id: Optional[str] = None,
        path: Optional[str] = None,
        mode: Optional[str] = None,
        callback: Optional[Callable[[bool], None]] = None,
        max_retries: int = 150,
        retry_interval: int = 1500,
    ) -> Any:
        """Uploads (``mode="upload"``, the default) or downloads the session's bound contexts
        (or only ``context_id``/``path``).

        Without ``callback`` it returns a :class:`ContextSync`, a coroutine: ``await`` it (or
        ``asyncio.run`` it), or call ``.wait()``, for the final :class:`ContextSyncResult`.
        With ``callback`` the sync starts at once (a refused sync raises here), a
        :class:`ContextSyncResult` saying it started is returned, and ``callback(success)`` is
        called from a background thread once every task finished: ``True`` only when all
        succeeded. Polling happens every ``retry_interval`` milliseconds, at most
        ``max_retries`` times.
        """
        args: SyncArgs = (context_id, path, mode, max_retries, retry_interval)
        if callback is None:
            return ContextSync(self, args)
        plan = self._transport.call(self._sync_call(args))

        def run() -> None:
            try:
                ok = self._poll(plan).success
            except SandboxAPIError:
                ok = False
            callback(ok)

        threading.Thread(target=run, name="hutch-context-sync", daemon=True).start()
        return plan.started()


class AsyncContextManager(_ContextCalls):
    """:class:`ContextManager` for event loops: ``sync`` is an ``async def``."""

    def __init__(self, transport: AsyncTransport, session_id: str) -> None:
        super().__init__(session_id)
        self._transport = transport

    async def info(
        self,
        context_id: Optional[str] = None,
        path: Optional[str] = None,
        task_type: Optional[str] = None,
    ) -> ContextInfoResult:
        """The session's transfer tasks, oldest first, filtered by context, path or type."""
        return await self._transport.call(self._info_call(context_id, path, task_type))

    async def _poll(self, plan: SyncPlan) -> ContextSyncResult:
        done = plan.nothing_to_do()
        if done is not None:
            return done
        for attempt in range(plan.polls):
            result = plan.settled(await self.info())
            if result is not None:
                return result
            if attempt + 1 < plan.max_retries:
                await asyncio.sleep(plan.retry_interval / 1000)
        return plan.timed_out()

    async def sync(
        self,
        context_id: Optional[str] = None,
        path: Optional[str] = None,
        mode: Optional[str] = None,
        callback: Optional[Callable[[bool], None]] = None,
        max_retries: int = 150,
        retry_interval: int = 1500,
    ) -> ContextSyncResult:
        """Uploads or downloads the session's bound contexts and returns once every task
        finished. With ``callback`` it returns as soon as the sync started and calls
        ``callback(success)`` from a task of the running loop when it finished."""
        plan = await self._transport.call(
            self._sync_call((context_id, path, mode, max_retries, retry_interval))
        )
        if callback is None:
            return await self._poll(plan)

        async def run() -> None:
            try:
                ok = (await self._poll(plan)).success
            except SandboxAPIError:
                ok = False
            callback(ok)

        task = asyncio.get_running_loop().create_task(run())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        return plan.started()


_BACKGROUND: "set[asyncio.Task[None]]" = set()
"""Callback syncs of the async client still running (the loop keeps only weak references)."""
