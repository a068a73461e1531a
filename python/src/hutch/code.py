"""Stateless code runs: ``POST /sessions/{id}/code`` runs a snippet in a fresh process
(:class:`Code`, and :class:`AsyncCode` for event loops)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ._http import AsyncTransport, Call, Transport

__all__ = ["LANGUAGES", "CodeResult", "Code", "AsyncCode"]

LANGUAGES = ("python", "javascript", "bash")
"""Languages the code route runs."""


@dataclass
class CodeResult:
    """The outcome of a code run."""

    exit_code: int
    stdout: str
    stderr: str
    duration_ms: int = 0
    timed_out: bool = False
    results: List[Dict[str, Any]] = field(default_factory=list)
    oom_killed: bool = False
    """Whether the kernel's out-of-memory killer ended the run: the session reached its memory
    limit (``memoryMb``)."""

    @property
    def ok(self) -> bool:
        """Whether the code exited with status 0."""
        return self.exit_code == 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "CodeResult":
        """Parses the wire form."""
        exit_code = data.get("exitCode")
        return cls(
            exit_code=int(exit_code) if exit_code is not None else -1,
            stdout=str(data.get("stdout", "")),
            stderr=str(data.get("stderr", "")),
            duration_ms=int(data.get("durationMs", 0) or 0),
            timed_out=bool(data.get("timedOut", False)),
            oom_killed=bool(data.get("oomKilled", False)),
            results=[dict(r) for r in data.get("results", []) or []],
        )


def code_call(
    session_path: str,
    language: str,
    code: str,
    timeout: Optional[float] = None,
    env: Optional[Mapping[str, str]] = None,
) -> Call[CodeResult]:
    """The request that runs ``code`` written in ``language``, checked."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    body: Dict[str, Any] = {"language": language, "code": code}
    if timeout is not None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        body["timeout"] = timeout
    if env is not None:
        body["env"] = dict(env)
    return Call(
        "POST",
        f"{session_path}/code",
        json_body=body,
        timeout=(timeout or 60.0) + 30.0,
        parse=lambda data: CodeResult.from_json(data or {}),
    )


class Code:
    """Runs code in one session, each time in a fresh process."""

    def __init__(self, transport: Transport, session_path: str) -> None:
        self._transport = transport
        self._session_path = session_path

    def run(
        self,
        language: str,
        code: str,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> CodeResult:
        """Runs ``code`` written in ``language`` (``python``, ``javascript`` or ``bash``)."""
        return self._transport.call(code_call(self._session_path, language, code, timeout, env))


class AsyncCode:
    """:class:`Code` for event loops."""

    def __init__(self, transport: AsyncTransport, session_path: str) -> None:
        self._transport = transport
        self._session_path = session_path

    async def run(
        self,
        language: str,
        code: str,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> CodeResult:
        """Runs ``code`` written in ``language`` (``python``, ``javascript`` or ``bash``)."""
        return await self._transport.call(
            code_call(self._session_path, language, code, timeout, env)
        )
