"""The stateful code interpreter of a session: contexts and executions over WebSocket.

Each context is one worker process (Python, JavaScript or Bash) with its own state, working
directory and environment. ``execute`` streams the frames of one execution to callbacks and
returns them gathered in an :class:`Execution`::

    interpreter = session.code_interpreter()
    ctx = interpreter.create_context(cwd="/workspace/project")
    interpreter.execute("x = 42\\nprint(x)", context_id=ctx["id"], on_stdout=print)
    interpreter.delete_context(ctx["id"])
"""

from __future__ import annotations

import base64
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from ._http import Transport
from ._ws import FrameReader, ws_connect
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
    "CodeInterpreter",
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


class CodeInterpreter:
    """Interpreter contexts of one session (``/sessions/{id}/interpreter/…``)."""

    def __init__(self, transport: Transport, session_path: str) -> None:
        self._transport = transport
        self._base = f"{session_path}/interpreter"

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
    ) -> Dict[str, Any]:
        """Creates a context; returns ``{"id", "cwd", "language", "createdAt", "active", …}``.

        ``language`` is ``python`` (default), ``javascript`` or ``bash``; ``cwd`` is created if
        missing. ``kernel`` (``ipython``/``python``), ``timeout`` (default per execution, in
        seconds), ``memory_mb`` and ``history_size`` are the context's settings.
        """
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
        data = self._transport.json("POST", f"{self._base}/contexts", json_body=body, timeout=max(self._transport.timeout, 60.0))
        return dict(data or {})

    def list_contexts(self) -> List[Dict[str, Any]]:
        """The contexts created in this session (not ``default``)."""
        data = self._transport.json("GET", f"{self._base}/contexts")
        items = data.get("contexts", []) if isinstance(data, dict) else (data or [])
        return [dict(c) for c in items]

    def get_context(self, context_id: str) -> Dict[str, Any]:
        """One context (``default`` included)."""
        return dict(self._transport.json("GET", f"{self._base}/contexts/{context_id}") or {})

    def delete_context(self, context_id: str) -> None:
        """Deletes a context and stops its worker. ``default`` cannot be deleted (400)."""
        self._transport.json("DELETE", f"{self._base}/contexts/{context_id}")

    def interrupt(self, context_id: str = DEFAULT_CONTEXT) -> bool:
        """Interrupts the running execution (KeyboardInterrupt, state kept); ``False`` when
        the context was idle."""
        data = self._transport.json("POST", f"{self._base}/contexts/{context_id}/interrupt")
        return bool((data or {}).get("interrupted", False))

    def restart(self, context_id: str = DEFAULT_CONTEXT) -> Dict[str, Any]:
        """Restarts a context's worker (state reset)."""
        return dict(self._transport.json("POST", f"{self._base}/contexts/{context_id}/restart") or {})

    def history(self, context_id: str = DEFAULT_CONTEXT, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """The context's last executions, newest last."""
        data = self._transport.json(
            "GET", f"{self._base}/contexts/{context_id}/history", params={"limit": limit}
        )
        items = data.get("executions", []) if isinstance(data, dict) else (data or [])
        return [dict(e) for e in items]

    @contextmanager
    def context(
        self, cwd: Optional[str] = None, language: Optional[str] = None, **settings: Any
    ) -> Iterator[Dict[str, Any]]:
        """A context deleted on exit: ``with interpreter.context(cwd="/p") as ctx: …``."""
        ctx = self.create_context(cwd=cwd, language=language, **settings)
        try:
            yield ctx
        finally:
            try:
                self.delete_context(ctx["id"])
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
        execution = Execution()
        out: List[str] = []
        err: List[str] = []
        context_error: Optional[ExecutionError] = None
        with ws_connect(self._transport, f"{self._base}/execute") as ws:
            ws.send(json.dumps(request))
            reader = FrameReader(ws)
            for frame in reader:
                kind = frame.get("type")
                if kind == "stdout":
                    text = str(frame.get("text", ""))
                    out.append(text)
                    if on_stdout:
                        on_stdout(text)
                elif kind == "stderr":
                    text = str(frame.get("text", ""))
                    err.append(text)
                    if on_stderr:
                        on_stderr(text)
                elif kind == "result":
                    result = Result(dict(frame.get("data") or {}), frame.get("executionCount"))
                    execution.results.append(result)
                    if result.execution_count is not None:
                        execution.execution_count = result.execution_count
                    if on_result:
                        on_result(result)
                elif kind == "artifact":
                    artifact = Artifact.from_frame(frame)
                    execution.artifacts.append(artifact)
                    if on_artifact:
                        on_artifact(artifact)
                elif kind == "error":
                    error = ExecutionError(
                        str(frame.get("name", "")),
                        str(frame.get("value", "")),
                        str(frame.get("traceback", "") or ""),
                    )
                    if error.name == "ContextError":
                        context_error = error
                        continue
                    execution.error = error
                    if on_error:
                        on_error(error.name, error.value, error.traceback)
                elif kind == "control":
                    execution.status = str(frame.get("text", ""))
                    if frame.get("executionCount") is not None:
                        execution.execution_count = int(frame["executionCount"])
                    if frame.get("exitCode") is not None:
                        execution.exit_code = int(frame["exitCode"])
                    if frame.get("signal") is not None:
                        execution.signal = int(frame["signal"])
                    if frame.get("durationMs") is not None:
                        execution.duration_ms = int(frame["durationMs"])
                    if on_control:
                        on_control(execution.status)
        execution.stdout = "".join(out)
        execution.stderr = "".join(err)
        if context_error is not None:
            missing = context_error.value.startswith("context not found")
            raise ContextError(
                context_error.value,
                status_code=404 if missing else None,
                code="context_not_found" if missing else "context_error",
            )
        if reader.close_code == 4008 or execution.status == "timeout":
            message = execution.error.value if execution.error else "execution timed out"
            raise ExecutionTimeoutError(message, execution)
        if execution.status is None:
            raise SandboxConnectionError(
                f"the execution ended without a final frame (close code {reader.close_code})"
            )
        return execution

    def run_code(self, code: str, **kwargs: Any) -> Execution:
        """Alias of :meth:`execute`."""
        return self.execute(code, **kwargs)
