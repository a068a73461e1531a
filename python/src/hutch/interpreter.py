"""The stateful code interpreter of a session: contexts and executions over WebSocket.

Each context is one worker process (Python, JavaScript or Bash) with its own state, working
directory and environment. ``execute`` streams the frames of one execution to callbacks and
returns them gathered in an :class:`Execution`. Executions go over the client's kept HTTP
connection (``POST …/interpreter/execute`` answering NDJSON frames), so a cell costs one
request, not a WebSocket handshake. :class:`AsyncCodeInterpreter` is the twin for event
loops::

    interpreter = session.code_interpreter()
    ctx = interpreter.create_context(cwd="/workspace/project")
    interpreter.execute("x = 42\\nprint(x)", context_id=ctx["id"], on_stdout=print)
    interpreter.delete_context(ctx["id"])
"""

from __future__ import annotations

import base64
import json
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
)

import httpx

from ._http import AsyncTransport, Call, Transport
from .errors import (
    ContextError,
    ContextNotFoundError,
    ExecutionTimeoutError,
    SandboxConnectionError,
)

__all__ = [
    "DEFAULT_CONTEXT",
    "Artifact",
    "Result",
    "ExecutionError",
    "Execution",
    "InterpreterContext",
    "HistoryEntry",
    "ExecutionCollector",
    "CodeInterpreter",
    "AsyncCodeInterpreter",
]

DEFAULT_CONTEXT = "default"
"""The id of the context used when none is named; it always exists and cannot be deleted."""

TextCallback = Callable[[str], None]
ErrorCallback = Callable[[str, str, str], None]


@dataclass
class Artifact:
    """A file an execution produced, such as a matplotlib figure (``image/png``)."""

    name: str
    mime_type: str
    data: bytes

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> "Artifact":
        """Parses an ``artifact`` frame (``data`` is base64)."""
        raw = frame.get("data", "")
        try:
            data = base64.b64decode(raw) if isinstance(raw, str) else bytes(raw)
        except ValueError:
            data = str(raw).encode()
        return cls(str(frame.get("name", "")), str(frame.get("mimeType", "")), data)


@dataclass
class Result:
    """A value an execution displayed or ended with, by MIME type (``text/plain``, …)."""

    data: Dict[str, Any]
    execution_count: Optional[int] = None

    @property
    def text(self) -> Optional[str]:
        """The ``text/plain`` form, if any."""
        value = self.data.get("text/plain")
        return None if value is None else str(value)

    def __str__(self) -> str:
        return self.text or ""


@dataclass
class ExecutionError:
    """An exception the executed code raised (``name``, ``value``, ``traceback``)."""

    name: str
    value: str
    traceback: str = ""


@dataclass
class Execution:
    """Everything one execution produced."""

    stdout: str = ""
    stderr: str = ""
    results: List[Result] = field(default_factory=list)
    error: Optional[ExecutionError] = None
    execution_count: Optional[int] = None
    artifacts: List[Artifact] = field(default_factory=list)
    status: Optional[str] = None
    """The final control frame: completed, interrupted, timeout, exited or crashed."""
    exit_code: Optional[int] = None
    """For ``exited``: the worker's exit status."""
    signal: Optional[int] = None
    """For ``crashed``: the signal that killed the worker."""
    duration_ms: Optional[int] = None

    @property
    def text(self) -> Optional[str]:
        """The ``text/plain`` form of the last result, if any."""
        return self.results[-1].text if self.results else None


@dataclass
class InterpreterContext:
    """An interpreter context. ``ctx["id"]`` reads the wire form, as older code does."""

    id: str
    cwd: str = ""
    language: str = "python"
    kernel: str = ""
    """``ipython``, ``python``, ``node`` or ``bash``: what the worker runs now."""
    created_at: Optional[str] = None
    active: bool = False
    """Whether its worker runs; an inactive context restarts on its next execution."""
    timeout: Optional[float] = None
    """Default execution timeout, in seconds."""
    memory_mb: Optional[int] = None
    history_size: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "InterpreterContext":
        """Parses the wire form."""
        memory = data.get("memoryMb")
        history = data.get("historySize")
        timeout = data.get("timeout")
        return cls(
            id=str(data["id"]),
            cwd=str(data.get("cwd", "")),
            language=str(data.get("language", "python")),
            kernel=str(data.get("kernel", "")),
            created_at=data.get("createdAt"),
            active=bool(data.get("active", False)),
            timeout=float(timeout) if timeout is not None else None,
            memory_mb=int(memory) if memory is not None else None,
            history_size=int(history) if history is not None else None,
            raw=dict(data),
        )

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        """A field of the wire form (``createdAt``, …), or ``default``."""
        return self.raw.get(key, default)


@dataclass
class HistoryEntry:
    """One past execution of a context."""

    code: str
    status: str = ""
    execution_count: Optional[int] = None
    duration_ms: Optional[int] = None
    stdout: str = ""
    stderr: str = ""
    error: Optional[ExecutionError] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "HistoryEntry":
        """Parses the wire form."""
        error = data.get("error")
        count = data.get("executionCount")
        duration = data.get("durationMs")
        return cls(
            code=str(data.get("code", "")),
            status=str(data.get("status", "")),
            execution_count=int(count) if count is not None else None,
            duration_ms=int(duration) if duration is not None else None,
            stdout=str(data.get("stdout", "") or ""),
            stderr=str(data.get("stderr", "") or ""),
            error=ExecutionError(
                str(error.get("name", "")),
                str(error.get("value", "")),
                str(error.get("traceback", "") or ""),
            )
            if isinstance(error, Mapping)
            else None,
            raw=dict(data),
        )

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]


@dataclass
class ExecutionCallbacks:
    """Where the frames of an execution go as they come."""

    on_stdout: Optional[TextCallback] = None
    on_stderr: Optional[TextCallback] = None
    on_error: Optional[ErrorCallback] = None
    on_artifact: Optional[Callable[[Artifact], None]] = None
    on_control: Optional[TextCallback] = None
    on_result: Optional[Callable[[Result], None]] = None


class ExecutionCollector:
    """Reads the frames of one execution into an :class:`Execution`, calling the callbacks
    as they come; ``finish()`` returns it or raises what the frames reported."""

    def __init__(self, callbacks: ExecutionCallbacks) -> None:
        self.callbacks = callbacks
        self.execution = Execution()
        self._out: List[str] = []
        self._err: List[str] = []
        self._context_error: Optional[ExecutionError] = None

    def feed(self, frame: Mapping[str, Any]) -> None:
        """Takes one frame."""
        cb = self.callbacks
        execution = self.execution
        kind = frame.get("type")
        if kind == "stdout" or kind == "stderr":
            text = str(frame.get("text", ""))
            (self._out if kind == "stdout" else self._err).append(text)
            callback = cb.on_stdout if kind == "stdout" else cb.on_stderr
            if callback:
                callback(text)
        elif kind == "result":
            result = Result(dict(frame.get("data") or {}), frame.get("executionCount"))
            execution.results.append(result)
            if result.execution_count is not None:
                execution.execution_count = result.execution_count
            if cb.on_result:
                cb.on_result(result)
        elif kind == "artifact":
            artifact = Artifact.from_frame(frame)
            execution.artifacts.append(artifact)
            if cb.on_artifact:
                cb.on_artifact(artifact)
        elif kind == "error":
            error = ExecutionError(
                str(frame.get("name", "")),
                str(frame.get("value", "")),
                str(frame.get("traceback", "") or ""),
            )
            if error.name == "ContextError":
                self._context_error = error
                return
            execution.error = error
            if cb.on_error:
                cb.on_error(error.name, error.value, error.traceback)
        elif kind == "control":
            execution.status = str(frame.get("text", ""))
            for key, attr in (
                ("executionCount", "execution_count"),
                ("exitCode", "exit_code"),
                ("signal", "signal"),
                ("durationMs", "duration_ms"),
            ):
                if frame.get(key) is not None:
                    setattr(execution, attr, int(frame[key]))
            if cb.on_control:
                cb.on_control(execution.status)

    def finish(self) -> Execution:
        """The execution, once its frames ended; raises :class:`ContextError`,
        :class:`ExecutionTimeoutError` or, without a final frame, a connection error."""
        execution = self.execution
        execution.stdout = "".join(self._out)
        execution.stderr = "".join(self._err)
        if self._context_error is not None:
            missing = self._context_error.value.startswith("context not found")
            raise ContextError(
                self._context_error.value,
                status_code=404 if missing else None,
                code="context_not_found" if missing else "context_error",
            )
        if execution.status == "timeout":
            message = execution.error.value if execution.error else "execution timed out"
            raise ExecutionTimeoutError(message, execution)
        if execution.status is None:
            raise SandboxConnectionError("the execution ended without a final frame")
        return execution


def execute_request(
    code: str,
    context_id: Optional[str],
    envs: Optional[Mapping[str, str]],
    timeout: Optional[float],
    libraries: Optional[Sequence[str]],
) -> Dict[str, Any]:
    """The wire form of an execution, checked."""
    request: Dict[str, Any] = {"code": code}
    if context_id is not None:
        request["contextId"] = context_id
    if timeout is not None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        request["timeout"] = timeout
    if envs is not None:
        request["envs"] = dict(envs)
    if libraries:
        request["libraries"] = list(libraries)
    return request


def _ignore(_: Any) -> None:
    return None


class _InterpreterCalls:
    """The requests of one session's interpreter, shared by both faces."""

    def __init__(self, session_path: str, http_timeout: float) -> None:
        self._base = f"{session_path}/interpreter"
        self._http_timeout = http_timeout
        # The server bounds an execution by its timeout; the read waits as long as it runs.
        # Built once: an execution is the hottest call.
        self._execute_timeout = httpx.Timeout(http_timeout, read=None)

    def _context_path(self, context_id: str) -> str:
        return f"{self._base}/contexts/{context_id}"

    def _create_call(
        self,
        cwd: Optional[str],
        language: Optional[str],
        env: Optional[Mapping[str, str]],
        kernel: Optional[str],
        timeout: Optional[float],
        memory_mb: Optional[int],
        history_size: Optional[int],
    ) -> Call[InterpreterContext]:
        body: Dict[str, Any] = {}
        for key, value in (
            ("cwd", cwd),
            ("language", language),
            ("env", dict(env) if env is not None else None),
            ("kernel", kernel),
            ("timeout", timeout),
            ("memoryMb", memory_mb),
            ("historySize", history_size),
        ):
            if value is not None:
                body[key] = value
        return Call(
            "POST",
            f"{self._base}/contexts",
            json_body=body,
            timeout=max(self._http_timeout, 60.0),
            parse=InterpreterContext.from_json,
        )

    def _list_call(self) -> Call[List[InterpreterContext]]:
        def parse(data: Any) -> List[InterpreterContext]:
            items = data.get("contexts", []) if isinstance(data, dict) else (data or [])
            return [InterpreterContext.from_json(c) for c in items]

        return Call("GET", f"{self._base}/contexts", parse=parse)

    def _get_call(self, context_id: str) -> Call[InterpreterContext]:
        return Call("GET", self._context_path(context_id), parse=InterpreterContext.from_json)

    def _delete_call(self, context_id: str) -> Call[None]:
        return Call("DELETE", self._context_path(context_id), parse=_ignore)

    def _interrupt_call(self, context_id: str) -> Call[bool]:
        return Call(
            "POST",
            f"{self._context_path(context_id)}/interrupt",
            parse=lambda data: bool((data or {}).get("interrupted", False)),
        )

    def _restart_call(self, context_id: str) -> Call[InterpreterContext]:
        return Call(
            "POST",
            f"{self._context_path(context_id)}/restart",
            timeout=max(self._http_timeout, 60.0),
            parse=InterpreterContext.from_json,
        )

    def _history_call(self, context_id: str, limit: Optional[int]) -> Call[List[HistoryEntry]]:
        def parse(data: Any) -> List[HistoryEntry]:
            items = data.get("executions", []) if isinstance(data, dict) else (data or [])
            return [HistoryEntry.from_json(e) for e in items]

        return Call(
            "GET", f"{self._context_path(context_id)}/history", params={"limit": limit}, parse=parse
        )

    def _execute_call(self, request: Mapping[str, Any]) -> Call[None]:
        return Call("POST", f"{self._base}/execute", json_body=dict(request), timeout=self._execute_timeout)


def _frames(lines: Iterator[str]) -> Iterator[Dict[str, Any]]:
    for line in lines:
        if line.strip():
            frame = json.loads(line)
            if isinstance(frame, dict):
                yield frame


class CodeInterpreter(_InterpreterCalls):
    """Interpreter contexts of one session (``/sessions/{id}/interpreter/…``)."""

    def __init__(self, transport: Transport, session_path: str) -> None:
        super().__init__(session_path, transport.timeout)
        self._transport = transport

    # -- contexts ---------------------------------------------------------------------------

    def create_context(
        self,
        cwd: Optional[str] = None,
        language: Optional[str] = None,
        *,
        env: Optional[Mapping[str, str]] = None,
        kernel: Optional[str] = None,
        timeout: Optional[float] = None,
        memory_mb: Optional[int] = None,
        history_size: Optional[int] = None,
    ) -> InterpreterContext:
        """Creates a context (``id``, ``cwd``, ``language``, ``kernel``, ``active``, …).

        ``language`` is ``python`` (default), ``javascript`` or ``bash``; ``cwd`` is created if
        missing. ``kernel`` (``auto``/``ipython``/``python``), ``timeout`` (default per
        execution, in seconds), ``memory_mb`` and ``history_size`` are the context's settings.
        """
        return self._transport.call(
            self._create_call(cwd, language, env, kernel, timeout, memory_mb, history_size)
        )

    def list_contexts(self) -> List[InterpreterContext]:
        """The contexts created in this session (not ``default``)."""
        return self._transport.call(self._list_call())

    def get_context(self, context_id: str) -> InterpreterContext:
        """One context (``default`` included)."""
        return self._transport.call(self._get_call(context_id))

    def delete_context(self, context_id: str) -> None:
        """Deletes a context and stops its worker. ``default`` cannot be deleted (400)."""
        self._transport.call(self._delete_call(context_id))

    def interrupt(self, context_id: str = DEFAULT_CONTEXT) -> bool:
        """Interrupts the running execution (KeyboardInterrupt, state kept); ``False`` when
        the context was idle."""
        return self._transport.call(self._interrupt_call(context_id))

    def restart(self, context_id: str = DEFAULT_CONTEXT) -> InterpreterContext:
        """Restarts a context's worker (state reset)."""
        return self._transport.call(self._restart_call(context_id))

    def history(self, context_id: str = DEFAULT_CONTEXT, limit: Optional[int] = None) -> List[HistoryEntry]:
        """The context's last executions, newest last."""
        return self._transport.call(self._history_call(context_id, limit))

    @contextmanager
    def context(
        self, cwd: Optional[str] = None, language: Optional[str] = None, **settings: Any
    ) -> Iterator[InterpreterContext]:
        """A context deleted on exit: ``with interpreter.context(cwd="/p") as ctx: …``."""
        ctx = self.create_context(cwd=cwd, language=language, **settings)
        try:
            yield ctx
        finally:
            try:
                self.delete_context(ctx.id)
            except ContextNotFoundError:
                pass

    # -- execution --------------------------------------------------------------------------

    def execute(
        self,
        code: str,
        context_id: Optional[str] = None,
        envs: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        on_stdout: Optional[TextCallback] = None,
        on_stderr: Optional[TextCallback] = None,
        on_error: Optional[ErrorCallback] = None,
        on_artifact: Optional[Callable[[Artifact], None]] = None,
        on_control: Optional[TextCallback] = None,
        on_result: Optional[Callable[[Result], None]] = None,
        *,
        libraries: Optional[Sequence[str]] = None,
    ) -> Execution:
        """Executes ``code`` in a context (``default`` when ``context_id`` is omitted).

        Callbacks receive the frames as they come: ``on_stdout(text)``, ``on_stderr(text)``,
        ``on_error(name, value, traceback)``, ``on_artifact(artifact)``,
        ``on_control(status)``, ``on_result(result)``. ``envs`` apply to this execution only;
        ``timeout`` is in seconds; ``libraries`` are installed first when missing.

        An exception in the code is not raised: it is ``execution.error`` (and ``on_error``).
        Raises :class:`ExecutionTimeoutError` (a ``TimeoutError``) when the timeout passed,
        :class:`ContextError` when the context does not exist (``.response.status_code`` 404)
        or cannot start, and the SDK's HTTP errors when the session cannot be reached.
        """
        request = execute_request(code, context_id, envs, timeout, libraries)
        collector = ExecutionCollector(
            ExecutionCallbacks(on_stdout, on_stderr, on_error, on_artifact, on_control, on_result)
        )
        with self._transport.lines(self._execute_call(request)) as lines:
            for frame in _frames(lines):
                collector.feed(frame)
        return collector.finish()

    def run_code(self, code: str, **kwargs: Any) -> Execution:
        """Alias of :meth:`execute`."""
        return self.execute(code, **kwargs)


class AsyncCodeInterpreter(_InterpreterCalls):
    """:class:`CodeInterpreter` for event loops."""

    def __init__(self, transport: AsyncTransport, session_path: str) -> None:
        super().__init__(session_path, transport.timeout)
        self._transport = transport

    async def create_context(
        self,
        cwd: Optional[str] = None,
        language: Optional[str] = None,
        *,
        env: Optional[Mapping[str, str]] = None,
        kernel: Optional[str] = None,
        timeout: Optional[float] = None,
        memory_mb: Optional[int] = None,
        history_size: Optional[int] = None,
    ) -> InterpreterContext:
        """Creates a context; see :meth:`CodeInterpreter.create_context`."""
        return await self._transport.call(
            self._create_call(cwd, language, env, kernel, timeout, memory_mb, history_size)
        )

    async def list_contexts(self) -> List[InterpreterContext]:
        """The contexts created in this session (not ``default``)."""
        return await self._transport.call(self._list_call())

    async def get_context(self, context_id: str) -> InterpreterContext:
        """One context (``default`` included)."""
        return await self._transport.call(self._get_call(context_id))

    async def delete_context(self, context_id: str) -> None:
        """Deletes a context and stops its worker. ``default`` cannot be deleted (400)."""
        await self._transport.call(self._delete_call(context_id))

    async def interrupt(self, context_id: str = DEFAULT_CONTEXT) -> bool:
        """Interrupts the running execution; ``False`` when the context was idle."""
        return await self._transport.call(self._interrupt_call(context_id))

    async def restart(self, context_id: str = DEFAULT_CONTEXT) -> InterpreterContext:
        """Restarts a context's worker (state reset)."""
        return await self._transport.call(self._restart_call(context_id))

    async def history(
        self, context_id: str = DEFAULT_CONTEXT, limit: Optional[int] = None
    ) -> List[HistoryEntry]:
        """The context's last executions, newest last."""
        return await self._transport.call(self._history_call(context_id, limit))

    @asynccontextmanager
    async def context(
        self, cwd: Optional[str] = None, language: Optional[str] = None, **settings: Any
    ) -> AsyncIterator[InterpreterContext]:
        """A context deleted on exit: ``async with interpreter.context() as ctx: …``."""
        ctx = await self.create_context(cwd=cwd, language=language, **settings)
        try:
            yield ctx
        finally:
            try:
                await self.delete_context(ctx.id)
            except ContextNotFoundError:
                pass

    async def execute(
        self,
        code: str,
        context_id: Optional[str] = None,
        envs: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        on_stdout: Optional[TextCallback] = None,
        on_stderr: Optional[TextCallback] = None,
        on_error: Optional[ErrorCallback] = None,
        on_artifact: Optional[Callable[[Artifact], None]] = None,
        on_control: Optional[TextCallback] = None,
        on_result: Optional[Callable[[Result], None]] = None,
        *,
        libraries: Optional[Sequence[str]] = None,
    ) -> Execution:
        """Executes ``code``; see :meth:`CodeInterpreter.execute`."""
        request = execute_request(code, context_id, envs, timeout, libraries)
        collector = ExecutionCollector(
            ExecutionCallbacks(on_stdout, on_stderr, on_error, on_artifact, on_control, on_result)
        )
        async with self._transport.lines(self._execute_call(request)) as lines:
            async for line in lines:
                for frame in _frames(iter((line,))):
                    collector.feed(frame)
        return collector.finish()

    async def run_code(self, code: str, **kwargs: Any) -> Execution:
        """Alias of :meth:`execute`."""
        return await self.execute(code, **kwargs)
