"""Interactive sessions: a persistent interpreter (IPython for Python) in its own sandbox.

State survives across :meth:`InteractiveSandboxSession.run` calls, like notebook cells::

    with InteractiveSandboxSession(lang="python") as session:
        session.run("value = 21 * 2")
        print(session.run("print(f'Result: {value}')").stdout)   # Result: 42
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import List, Optional, Sequence, Type, Union

from .interpreter import (
    Artifact,
    CodeInterpreter,
    Execution,
    ExecutionError,
    InterpreterContext,
    Result,
)
from .sessions import Session, SessionsClient

__all__ = [
    "KernelType",
    "InteractiveSettings",
    "InteractiveResult",
    "InteractiveSandboxSession",
    "parse_memory",
]


class KernelType(str, Enum):
    """The kind of Python kernel a context runs."""

    IPYTHON = "ipython"
    """IPython ``InteractiveShell``: magics (``%who``, ``%pwd``, ``!ls``), rich display."""
    PYTHON = "python"
    """Plain CPython with the same protocol."""


def parse_memory(value: Union[str, int]) -> int:
    """``"2GB"``, ``"512MB"``, ``"1.5G"``, ``"256Mi"`` or a number of MiB → MiB."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"max_memory must be positive, got {value}")
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B?|B)?\s*", str(value), re.IGNORECASE)
    if not match:
        raise ValueError(f"max_memory must look like '2GB' or '512MB', got {value!r}")
    number = float(match.group(1))
    unit = match.group(2).upper()
    factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    mib = int(number * factor)
    if mib <= 0:
        raise ValueError(f"max_memory must be at least 1 MB, got {value!r}")
    return mib


@dataclass
class InteractiveSettings:
    """Settings of an interactive session's kernel."""

    kernel_type: KernelType = KernelType.IPYTHON
    max_memory: str = "1GB"
    """Memory limit of the kernel."""
    history_size: int = 1000
    """How many executions the kernel keeps retrievable."""
    timeout: float = 300
    """Per-cell timeout in seconds."""
    poll_interval: float = 0.1
    """Kept for compatibility: results are streamed, so nothing polls."""


@dataclass
class InteractiveResult:
    """The outcome of one cell."""

    stdout: str
    stderr: str
    exit_code: int
    """0 when the cell ran without an exception, 1 otherwise."""
    results: List[Result] = field(default_factory=list)
    error: Optional[ExecutionError] = None
    execution_count: Optional[int] = None
    artifacts: List[Artifact] = field(default_factory=list)

    @property
    def text(self) -> Optional[str]:
        """The ``text/plain`` form of the cell's last value, if any."""
        return self.results[-1].text if self.results else None


class InteractiveSandboxSession:
    """A sandbox session with one persistent interpreter context.

    The server and token come from ``client``, or ``api_url``/``bearer_token``, or the
    ``HUTCH_URL``/``HUTCH_TOKEN`` variables. Settings come from ``interactive_settings`` or the
    keyword shortcuts (``kernel_type``, ``max_memory``, ``history_size``, ``timeout``). The
    session is created on ``open()``/``__enter__`` and deleted on ``close()``/``__exit__``.
    """

    def __init__(
        self,
        lang: str = "python",
        kernel_type: Union[KernelType, str, None] = None,
        history_size: Optional[int] = None,
        timeout: Optional[float] = None,
        max_memory: Optional[str] = None,
        interactive_settings: Optional[InteractiveSettings] = None,
        *,
        client: Optional[SessionsClient] = None,
        api_url: Optional[str] = None,
        bearer_token: Optional[str] = None,
        session_ttl: int = 3600,
        image: Optional[str] = None,
        cwd: Optional[str] = None,
        verbose: bool = False,
    ) -> None:
        if lang not in ("python", "javascript", "bash"):
            raise ValueError(f"lang must be python, javascript or bash, got {lang!r}")
        settings = interactive_settings or InteractiveSettings()
        if kernel_type is not None:
            settings.kernel_type = KernelType(kernel_type)
        if history_size is not None:
            settings.history_size = history_size
        if timeout is not None:
            settings.timeout = timeout
        if max_memory is not None:
            settings.max_memory = max_memory
        if settings.history_size < 0:
            raise ValueError("history_size must be 0 or more")
        if settings.timeout <= 0:
            raise ValueError("timeout must be positive")
        self.memory_mb = parse_memory(settings.max_memory)
        self.lang = lang
        self.settings = settings
        self.cwd = cwd
        self.verbose = verbose
        self._own_client = client is None
        self._client_args = (api_url, bearer_token)
        self._client = client
        self._session_ttl = session_ttl
        self._image = image
        self.session: Optional[Session] = None
        self.interpreter: Optional[CodeInterpreter] = None
        self.context: Optional[InterpreterContext] = None

    @property
    def context_id(self) -> Optional[str]:
        """The id of the interpreter context, once open."""
        return None if self.context is None else self.context.id

    def open(self) -> "InteractiveSandboxSession":
        """Creates the session and its interpreter context."""
        if self.session is not None:
            return self
        if self._client is None:
            url, token = self._client_args
            self._client = SessionsClient(api_url=url, bearer_token=token)
        memory_mb = self.memory_mb
        self.session = self._client.create_session(
            ttl=self._session_ttl,
            image=self._image,
            # The session needs a little room beside the kernel for the agent and shells.
            resources={"memoryMb": max(memory_mb + 256, 512)},
        )
        try:
            self.interpreter = self.session.code_interpreter()
            self.context = self.interpreter.create_context(
                cwd=self.cwd,
                language=self.lang,
                kernel=self.settings.kernel_type.value if self.lang == "python" else None,
                timeout=self.settings.timeout,
                memory_mb=memory_mb,
                history_size=self.settings.history_size,
            )
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Deletes the session (and with it the kernel)."""
        try:
            if self.session is not None and self._client is not None:
                try:
                    self._client.delete_session(self.session.session_id)
                except Exception:
                    pass
        finally:
            self.session = None
            self.interpreter = None
            self.context = None
            if self._own_client and self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> "InteractiveSandboxSession":
        return self.open()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def run(
        self,
        code: str,
        libraries: Optional[Sequence[str]] = None,
        timeout: Optional[float] = None,
    ) -> InteractiveResult:
        """Runs one cell. ``libraries`` are installed first when missing.

        The cell's value (like ``Out[n]`` in IPython, e.g. from ``%pwd``) is appended to
        ``stdout``; an exception makes ``exit_code`` 1 and puts the traceback in ``stderr``.
        State is kept after an exception. Raises ``ExecutionTimeoutError`` (a
        ``TimeoutError``) when the cell runs past its timeout (state is kept too).
        """
        if self.interpreter is None or self.context is None:
            self.open()
        assert self.interpreter is not None and self.context_id is not None
        execution: Execution = self.interpreter.execute(
            code,
            context_id=self.context_id,
            timeout=timeout,
            libraries=libraries,
            on_stdout=(lambda t: print(t, end="")) if self.verbose else None,
        )
        stdout = execution.stdout
        for result in execution.results:
            text = result.text
            if text is not None:
                if stdout and not stdout.endswith("\n"):
                    stdout += "\n"
                stdout += text + "\n"
        stderr = execution.stderr
        exit_code = 0
        if execution.error is not None:
            exit_code = 1
            detail = execution.error.traceback or f"{execution.error.name}: {execution.error.value}"
            if stderr and not stderr.endswith("\n"):
                stderr += "\n"
            stderr += detail if detail.endswith("\n") else detail + "\n"
        elif execution.status in ("exited", "crashed"):
            if execution.exit_code is not None:
                exit_code = execution.exit_code
            else:
                exit_code = 128 + execution.signal if execution.signal else 1
        return InteractiveResult(
            stdout=stdout,
            stderr=stderr,
            exit_code=exit_code,
            results=execution.results,
            error=execution.error,
            execution_count=execution.execution_count,
            artifacts=execution.artifacts,
        )
