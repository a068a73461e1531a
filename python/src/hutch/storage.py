"""Storage contexts: named persistent storage of a tenant, synchronised into sessions.

``client.contexts`` creates, lists and deletes them (``/v1/contexts``); a session binds them
to paths with ``create_session(context_syncs=[{"context_id": …, "path": …}])``, and
``session.context`` shows (``info``) and triggers (``sync``) the transfers::

    ctx = client.contexts.create("project-cache")
    session = client.create_session(context_syncs=[{"context_id": ctx.id, "path": "/workspace/cache"}])
    ...
    result = session.context.sync().wait()          # or: await session.context.sync()
    session.context.sync(callback=lambda ok: print("synced" if ok else "failed"))
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Dict, Generator, List, Mapping, Optional

from ._http import Transport
from .errors import SandboxAPIError
from .sessions import parse_time

if TYPE_CHECKING:
    from .sessions import SessionHandle

__all__ = [
    "StorageContext",
    "StorageContextList",
    "StorageContexts",
    "ContextStatusData",
    "ContextInfoResult",
    "ContextSyncResult",
    "ContextSync",
    "ContextManager",
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


class StorageContexts:
    """The caller's storage contexts (``/contexts``)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def create(self, name: str) -> StorageContext:
        """Creates an empty context; ``name`` is unique per tenant (letters, digits, ``._-``)."""
        if not name:
            raise ValueError("name must not be empty")
        return StorageContext.from_json(self._transport.json("POST", "/contexts", json_body={"name": name}))

    def get(self, context_id: str) -> StorageContext:
        """One context."""
        return StorageContext.from_json(self._transport.json("GET", f"/contexts/{context_id}"))

    def list(self, limit: int = 20, offset: int = 0) -> StorageContextList:
        """One page of the caller's contexts, oldest first."""
        if not 1 <= limit <= 100:
            raise ValueError(f"limit must be between 1 and 100, got {limit}")
        if offset < 0:
            raise ValueError(f"offset must be 0 or more, got {offset}")
        data = self._transport.json("GET", "/contexts", params={"limit": limit, "offset": offset})
        items = data.get("contexts", []) if isinstance(data, dict) else (data or [])
        return StorageContextList(
            contexts=[StorageContext.from_json(c) for c in items],
            total=int(data.get("total", len(items))) if isinstance(data, dict) else len(items),
            limit=int(data.get("limit", limit)) if isinstance(data, dict) else limit,
            offset=int(data.get("offset", offset)) if isinstance(data, dict) else offset,
        )

    def delete(self, context_id: str) -> None:
        """Deletes a context and its content."""
        self._transport.request("DELETE", f"/contexts/{context_id}")


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


class ContextSync:
    """A started sync. ``await`` it, or call :meth:`wait`, to poll until its tasks finish."""

    def __init__(
        self,
        manager: "ContextManager",
        request_id: str,
        tasks: List[ContextStatusData],
        max_retries: int,
        retry_interval: int,
    ) -> None:
        self._manager = manager
        self.request_id = request_id
        self.tasks = tasks
        self.max_retries = max_retries
        self.retry_interval = retry_interval

    def _poll_once(self) -> Optional[ContextSyncResult]:
        info = self._manager.info()
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
        if all(t.finished for t in latest):
            failed = [t for t in latest if t.status != "Success"]
            return ContextSyncResult(
                success=not failed,
                request_id=self.request_id,
                tasks=latest,
                error_message="; ".join(t.error_message for t in failed if t.error_message),
            )
        return None

    def _timed_out(self) -> ContextSyncResult:
        return ContextSyncResult(
            success=False,
            request_id=self.request_id,
            tasks=self.tasks,
            error_message=f"the sync did not finish after {self.max_retries} polls",
        )

    def wait(self) -> ContextSyncResult:
        """Polls ``context/info`` until every task finished (or ``max_retries`` polls)."""
        if not self.tasks:
            return ContextSyncResult(success=True, request_id=self.request_id)
        for attempt in range(max(self.max_retries, 1)):
            result = self._poll_once()
            if result is not None:
                return result
            if attempt + 1 < self.max_retries:
                time.sleep(self.retry_interval / 1000)
        return self._timed_out()

    async def wait_async(self) -> ContextSyncResult:
        """Like :meth:`wait`, without blocking the event loop."""
        if not self.tasks:
            return ContextSyncResult(success=True, request_id=self.request_id)
        for attempt in range(max(self.max_retries, 1)):
            result = await asyncio.get_running_loop().run_in_executor(None, self._poll_once)
            if result is not None:
                return result
            if attempt + 1 < self.max_retries:
                await asyncio.sleep(self.retry_interval / 1000)
        return self._timed_out()

    def __await__(self) -> Generator[Any, None, ContextSyncResult]:
        return self.wait_async().__await__()


class ContextManager:
    """Storage-context synchronisation of one session (``session.context``)."""

    def __init__(self, transport: Transport, session_id: str, session: "SessionHandle") -> None:
        self._transport = transport
        self.session_id = session_id
        self.session = session

    def info(
        self,
        context_id: Optional[str] = None,
        path: Optional[str] = None,
        task_type: Optional[str] = None,
    ) -> ContextInfoResult:
        """The session's transfer tasks, oldest first, filtered by context, path or type."""
        response = self._transport.request(
            "GET",
            f"/sessions/{self.session_id}/context/info",
            params={"contextId": context_id, "path": path, "taskType": task_type},
        )
        data = response.json() if response.content else {}
        items = data.get("contextStatusData", []) if isinstance(data, dict) else []
        return ContextInfoResult(
            context_status_data=[ContextStatusData.from_json(t) for t in items],
            success=True,
            request_id=response.headers.get("x-request-id", ""),
        )

    def sync(
        self,
        context_id: Optional[str] = None,
        path: Optional[str] = None,
        mode: Optional[str] = None,
        callback: Optional[Callable[[bool], None]] = None,
        max_retries: int = 150,
        retry_interval: int = 1500,
    ) -> Any:
        """Starts an upload (``mode="upload"``, the default) or download of the session's
        bound contexts (or only ``context_id``/``path``).

        With ``callback`` it returns a :class:`ContextSyncResult` at once (``success``: the
        sync started) and calls ``callback(success)`` from a background thread when the tasks
        finish. Without, it returns a :class:`ContextSync`: ``await`` it, or call ``.wait()``,
        for the final :class:`ContextSyncResult`. Polling happens every ``retry_interval``
        milliseconds, at most ``max_retries`` times.
        """
        body: Dict[str, Any] = {}
        if context_id is not None:
            body["contextId"] = context_id
        if path is not None:
            body["path"] = path
        if mode is not None:
            body["mode"] = mode
        response = self._transport.request(
            "POST", f"/sessions/{self.session_id}/context/sync", json_body=body
        )
        data = response.json() if response.content else {}
        tasks = [ContextStatusData.from_json(t) for t in (data.get("tasks") or [])] if isinstance(data, dict) else []
        pending = ContextSync(
            self, response.headers.get("x-request-id", ""), tasks, max_retries, retry_interval
        )
        if callback is None:
            return pending

        def run() -> None:
            try:
                ok = pending.wait().success
            except SandboxAPIError:
                ok = False
            callback(ok)

        threading.Thread(target=run, name="hutch-context-sync", daemon=True).start()
        return ContextSyncResult(success=True, request_id=pending.request_id, tasks=tasks)
