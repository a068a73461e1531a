"""Shell commands in a session: one-shot, streamed, or in the background."""

from __future__ import annotations

import base64
import codecs
import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from ._http import Transport
from ._ws import ws_connect, ws_frames
from .errors import (
    SandboxAPIError,
    SandboxConnectionError,
    SandboxOperationError,
    error_from_response,
)

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
    oom_killed: bool = False
    """Whether the kernel's out-of-memory killer ended the command: the session reached its
    memory limit (``memoryMb``)."""

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
            oom_killed=bool(data.get("oomKilled", False)),
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

    @property
    def oom_killed(self) -> bool:
        """Whether the kernel's out-of-memory killer ended the process, as of the last
        :meth:`refresh` (``oomKilled`` of its status)."""
        return bool(self.info.get("oomKilled", False))

    def refresh(self) -> Dict[str, Any]:
        """Fetches the process's current state."""
        data = self._transport.json("GET", self.path)
        self.info = dict(data or {})
        return self.info

    def send_stdin(self, data: Union[str, bytes], eof: bool = False) -> None:
        """Writes to the process's standard input; ``eof=True`` closes it afterwards."""
        raw = data.encode() if isinstance(data, str) else data
        self._transport.request(
            "POST",
            f"{self.path}/stdin",
            params={"eof": "true" if eof else None},
            content=raw,
            headers={"Content-Type": "application/octet-stream"},
        )

    def close_stdin(self) -> None:
        """Closes the process's standard input (end of file)."""
        self.send_stdin(b"", eof=True)

    def signal(self, signal: Union[str, int] = "TERM") -> None:
        """Sends a signal (``"TERM"``, ``"KILL"``, ``"INT"`` or a number)."""
        self._transport.json("POST", f"{self.path}/signal", json_body={"signal": signal})

    def kill(self) -> None:
        """Kills the process and everything it started."""
        self.signal("KILL")

    def remove(self) -> None:
        """Kills the process if it runs and forgets it."""
        self._transport.request("DELETE", self.path)

    def wait(
        self,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        from_seq: int = 0,
    ) -> CommandResult:
        """Streams the process's output from ``from_seq`` until it exits."""
        with ws_connect(self._transport, f"{self.path}/stream?from={from_seq}") as ws:
            return _collect(ws_frames(ws), on_stdout, on_stderr)


def _text(frame: Mapping[str, Any], decoder: "codecs.IncrementalDecoder") -> str:
    """The text of an output frame: ``data`` is base64 bytes (chunk boundaries may split a
    character, so each stream has its own incremental decoder); ``text`` is taken as is."""
    if "data" in frame:
        try:
            raw = base64.b64decode(str(frame["data"]))
        except ValueError:
            raw = str(frame["data"]).encode()
        return str(decoder.decode(raw))
    return str(frame.get("text", ""))


def _collect(
    frames: Any,
    on_stdout: Optional[OutputCallback],
    on_stderr: Optional[OutputCallback],
) -> CommandResult:
    out: List[str] = []
    err: List[str] = []
    decoders = {
        "stdout": codecs.getincrementaldecoder("utf-8")("replace"),
        "stderr": codecs.getincrementaldecoder("utf-8")("replace"),
    }
    final: Optional[Dict[str, Any]] = None
    for frame in frames:
        kind = frame.get("type")
        if kind in ("stdout", "stderr"):
            text = _text(frame, decoders[kind])
            if not text:
                continue
            (out if kind == "stdout" else err).append(text)
            callback = on_stdout if kind == "stdout" else on_stderr
            if callback:
                callback(text)
        elif kind == "error":
            detail = frame.get("error")
            if isinstance(detail, dict):
                code = str(detail.get("code", ""))
                raise error_from_response(
                    _STATUS.get(code, 400), {}, json.dumps({"error": detail})
                )
            raise SandboxOperationError(str(frame.get("message", frame)))
        elif kind == "exit" or "exitCode" in frame:
            final = dict(frame)
    for kind, decoder in decoders.items():
        tail = decoder.decode(b"", final=True)
        if tail:
            (out if kind == "stdout" else err).append(tail)
            callback = on_stdout if kind == "stdout" else on_stderr
            if callback:
                callback(tail)
    if final is None:
        raise SandboxConnectionError("the command's stream ended before its exit")
    if final.get("exitCode") is None:
        signal = final.get("signal")
        final["exitCode"] = 128 + int(signal) if signal else -1
    result = CommandResult.from_json(final)
    result.stdout = "".join(out)
    result.stderr = "".join(err)
    return result


# The HTTP status of each error code, for errors that arrive inside a stream.
_STATUS = {
    "invalid_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "session_not_found": 404,
    "process_not_found": 404,
    "file_not_found": 404,
    "context_not_found": 404,
    "storage_context_not_found": 404,
    "conflict": 409,
    "payload_too_large": 413,
    "rate_limited": 429,
    "quota_exceeded": 429,
    "internal": 500,
    "sandbox_unavailable": 502,
    "capacity": 503,
    "sandbox_timeout": 504,
    "disk_full": 507,
}


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
                    if stdin is None:
                        # Like the one-shot route: nothing to read on standard input.
                        ws.send(json.dumps({"type": "eof"}))
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
