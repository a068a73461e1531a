"""Shell commands in a session: one-shot, streamed, or in the background."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from ._http import Transport
from ._ws import ws_connect, ws_frames
from .errors import SandboxAPIError, SandboxOperationError

__all__ = ["CommandResult", "Process", "Commands"]

OutputCallback = Callable[[str], None]


@dataclass
class CommandResult:
    """The outcome of a command."""

    exit_code: int
    stdout: str
    stderr: str
    duration_ms: int = 0
    timed_out: bool = False
    truncated: bool = False

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0."""
        return self.exit_code == 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "CommandResult":
        """Parses the wire form."""
        return cls(
            exit_code=int(data.get("exitCode", -1) if data.get("exitCode") is not None else -1),
            stdout=str(data.get("stdout", "")),
            stderr=str(data.get("stderr", "")),
            duration_ms=int(data.get("durationMs", 0) or 0),
            timed_out=bool(data.get("timedOut", False)),
            truncated=bool(data.get("truncated", False)),
        )


class Process:
    """A background process started with ``commands.run(..., background=True)``."""

    def __init__(self, transport: Transport, session_path: str, info: Mapping[str, Any]) -> None:
        self._transport = transport
        self._session_path = session_path
        self.info: Dict[str, Any] = dict(info)
        pid = info.get("pid", info.get("id"))
        if pid is None:
            raise SandboxOperationError(f"the server did not name the process: {info!r}")
        self.pid = pid

    @property
    def path(self) -> str:
        """``/sessions/{id}/processes/{pid}``."""
        return f"{self._session_path}/processes/{self.pid}"

    def refresh(self) -> Dict[str, Any]:
        """Fetches the process's current state."""
        data = self._transport.json("GET", self.path)
        self.info = dict(data or {})
        return self.info

    def send_stdin(self, data: str) -> None:
        """Writes text to the process's standard input."""
        self._transport.json("POST", f"{self.path}/stdin", json_body={"data": data})

    def signal(self, signal: Union[str, int] = "TERM") -> None:
        """Sends a signal (``"TERM"``, ``"KILL"``, ``"INT"`` or a number)."""
        self._transport.json("POST", f"{self.path}/signal", json_body={"signal": signal})

    def kill(self) -> None:
        """Kills the process and everything it started."""
        self.signal("KILL")

    def wait(
        self,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        from_seq: int = 0,
    ) -> CommandResult:
        """Streams the process's output from ``from_seq`` until it exits."""
        with ws_connect(self._transport, f"{self.path}/stream?from={from_seq}") as ws:
            return _collect(ws_frames(ws), on_stdout, on_stderr)


def _collect(
    frames: Any,
    on_stdout: Optional[OutputCallback],
    on_stderr: Optional[OutputCallback],
) -> CommandResult:
    out: List[str] = []
    err: List[str] = []
    final: Dict[str, Any] = {}
    for frame in frames:
        kind = frame.get("type")
        text = frame.get("text", frame.get("data", ""))
        if kind == "stdout":
            out.append(str(text))
            if on_stdout:
                on_stdout(str(text))
        elif kind == "stderr":
            err.append(str(text))
            if on_stderr:
                on_stderr(str(text))
        elif kind == "error" and "exitCode" not in frame:
            raise SandboxOperationError(str(frame.get("message", frame.get("value", frame))))
        if "exitCode" in frame:
            final = dict(frame)
    result = CommandResult.from_json(final)
    result.stdout = "".join(out)
    result.stderr = "".join(err)
    return result


class Commands:
    """Runs commands in one session (``/sessions/{id}/commands``)."""

    def __init__(self, transport: Transport, session_path: str) -> None:
        self._transport = transport
        self._session_path = session_path

    def _request(
        self,
        cmd: Union[str, Sequence[str]],
        env: Optional[Mapping[str, str]],
        cwd: Optional[str],
        timeout: Optional[float],
        stdin: Optional[str],
    ) -> Dict[str, Any]:
        body: Dict[str, Any] = {}
        if isinstance(cmd, str):
            if not cmd:
                raise ValueError("cmd must not be empty")
            body["command"] = cmd
        else:
            argv = [str(a) for a in cmd]
            if not argv:
                raise ValueError("cmd must not be empty")
            body["argv"] = argv
        if cwd is not None:
            body["cwd"] = cwd
        if env is not None:
            body["env"] = dict(env)
        if timeout is not None:
            if timeout <= 0:
                raise ValueError(f"timeout must be positive, got {timeout}")
            body["timeout"] = timeout
        if stdin is not None:
            body["stdin"] = stdin
        return body

    def run(
        self,
        cmd: Union[str, Sequence[str]],
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        background: bool = False,
        stdin: Optional[str] = None,
    ) -> Any:
        """Runs ``cmd`` (a shell command line, or an argv list run without a shell).

        Returns a :class:`CommandResult` (``exit_code``, ``stdout``, ``stderr``,
        ``duration_ms``, ``timed_out``); a non-zero exit is not an exception. With
        ``on_stdout``/``on_stderr`` the output is streamed to them as it comes (over the
        streaming route when the server has it, otherwise delivered whole at the end). With
        ``background=True`` it returns a :class:`Process` at once.
        """
        body = self._request(cmd, env, cwd, timeout, stdin)
        http_timeout = (timeout or 60.0) + 30.0
        if background:
            body["background"] = True
            data = self._transport.json(
                "POST", f"{self._session_path}/commands", json_body=body, timeout=http_timeout
            )
            return Process(self._transport, self._session_path, data or {})
        if on_stdout is not None or on_stderr is not None:
            try:
                with ws_connect(self._transport, f"{self._session_path}/commands/stream") as ws:
                    ws.send(json.dumps(body))
                    return _collect(ws_frames(ws), on_stdout, on_stderr)
            except SandboxAPIError as e:
                if e.status_code not in (404, 405):
                    raise
            # No streaming route on this server: run once and hand over the whole output.
            result = self._one_shot(body, http_timeout)
            if on_stdout is not None and result.stdout:
                on_stdout(result.stdout)
            if on_stderr is not None and result.stderr:
                on_stderr(result.stderr)
            return result
        return self._one_shot(body, http_timeout)

    def _one_shot(self, body: Mapping[str, Any], http_timeout: float) -> CommandResult:
        data = self._transport.json(
            "POST", f"{self._session_path}/commands", json_body=dict(body), timeout=http_timeout
        )
        return CommandResult.from_json(data or {})

    def list_processes(self) -> List[Dict[str, Any]]:
        """The session's background processes."""
        data = self._transport.json("GET", f"{self._session_path}/processes")
        if isinstance(data, dict):
            items: List[Any] = data.get("processes") or data.get("items") or []
            return [dict(p) for p in items]
        return [dict(p) for p in (data or [])]

    def process(self, pid: Union[int, str]) -> Process:
        """A handle on a background process."""
        return Process(self._transport, self._session_path, {"pid": pid})
