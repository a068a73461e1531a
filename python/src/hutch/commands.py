"""Shell commands in a session: one-shot, streamed, or in the background.

:class:`Commands` and :class:`Process` block; :class:`AsyncCommands` and :class:`AsyncProcess`
are their twins for event loops. Both build the same requests and read the same frames
(:class:`CommandOutput`).
"""

from __future__ import annotations

import base64
import codecs
import json
from dataclasses import dataclass, field
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Union,
    overload,
)

from ._http import AsyncTransport, Call, Transport
from ._ws import AsyncFrameReader, CloseCode, FrameReader, ws_connect, ws_connect_async
from .errors import (
    SandboxAPIError,
    SandboxConnectionError,
    SandboxOperationError,
    error_from_frame,
)

__all__ = [
    "CommandResult",
    "OutputChunk",
    "ProcessInfo",
    "CommandOutput",
    "Process",
    "AsyncProcess",
    "Commands",
    "AsyncCommands",
]

OutputCallback = Callable[[str], None]
Command = Union[str, Sequence[str]]


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


@dataclass(frozen=True)
class OutputChunk:
    """A piece of a command's output, as it streams."""

    stream: str
    """``stdout`` or ``stderr``."""
    text: str


@dataclass
class ProcessInfo:
    """A background process as the API shows it."""

    pid: int
    process_id: Optional[int] = None
    """Its id, unique within the session."""
    command: List[str] = field(default_factory=list)
    """The program and its arguments (a command line runs as ``/bin/sh -c LINE``)."""
    status: str = ""
    """``running`` or ``exited``."""
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    timed_out: bool = False
    oom_killed: bool = False
    started_at: Optional[str] = None
    exited_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Every field of the wire form, including ones this SDK does not know yet."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ProcessInfo":
        """Parses the wire form."""
        pid = data.get("pid", data.get("id"))
        if pid is None:
            raise SandboxOperationError(f"the server did not name the process: {dict(data)!r}")
        command = data.get("command")
        return cls(
            pid=int(pid),
            process_id=int(data["processId"]) if data.get("processId") is not None else None,
            command=[str(c) for c in command] if isinstance(command, list) else [],
            status=str(data.get("status", "")),
            exit_code=int(data["exitCode"]) if data.get("exitCode") is not None else None,
            signal=int(data["signal"]) if isinstance(data.get("signal"), int) else None,
            timed_out=bool(data.get("timedOut", False)),
            oom_killed=bool(data.get("oomKilled", False)),
            started_at=data.get("startedAt"),
            exited_at=data.get("exitedAt"),
            raw=dict(data),
        )


class CommandOutput:
    """Reads the frames of a command's or process's stream into chunks and a result.

    ``feed(frame)`` returns the chunks the frame carried (stdout/stderr ``data`` is base64
    bytes; chunk boundaries may split a character, so each stream has its own incremental
    decoder); ``finish()`` returns the :class:`CommandResult` once the stream ended.
    """

    def __init__(
        self,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> None:
        self._callbacks = {"stdout": on_stdout, "stderr": on_stderr}
        self._text: Dict[str, List[str]] = {"stdout": [], "stderr": []}
        self._decoders = {
            kind: codecs.getincrementaldecoder("utf-8")("replace") for kind in self._text
        }
        self._final: Optional[Dict[str, Any]] = None
        self._close: str = ""

    def _emit(self, kind: str, text: str) -> List[OutputChunk]:
        if not text:
            return []
        self._text[kind].append(text)
        callback = self._callbacks[kind]
        if callback:
            callback(text)
        return [OutputChunk(kind, text)]

    def feed(self, frame: Mapping[str, Any]) -> List[OutputChunk]:
        """Takes one frame; raises the SDK error an ``error`` frame carries."""
        kind = frame.get("type")
        if kind in ("stdout", "stderr"):
            assert isinstance(kind, str)
            if "data" in frame:
                try:
                    raw = base64.b64decode(str(frame["data"]))
                except ValueError:
                    raw = str(frame["data"]).encode()
                text = str(self._decoders[kind].decode(raw))
            else:
                text = str(frame.get("text", ""))
            return self._emit(kind, text)
        if kind == "error":
            detail = frame.get("error")
            if isinstance(detail, dict):
                raise error_from_frame(detail)
            raise SandboxOperationError(str(frame.get("message", frame)))
        if kind == "exit" or "exitCode" in frame:
            self._final = dict(frame)
        return []

    def flush(self) -> List[OutputChunk]:
        """The text still held by the decoders once the stream ended."""
        chunks: List[OutputChunk] = []
        for kind, decoder in self._decoders.items():
            chunks += self._emit(kind, decoder.decode(b"", final=True))
        return chunks

    def ended(self, reader: CloseCode) -> None:
        """Notes how the stream's WebSocket closed, for the error should no exit have come."""
        if reader.close_code is not None:
            self._close = f" (closed {reader.close_code}"
            self._close += f": {reader.close_reason})" if reader.close_reason else ")"

    def finish(self) -> CommandResult:
        """The command's result; raises when the stream ended before the exit."""
        self.flush()
        final = self._final
        if final is None:
            raise SandboxConnectionError(
                f"the command's stream ended before its exit{self._close}"
            )
        if final.get("exitCode") is None:
            signal = final.get("signal")
            final["exitCode"] = 128 + int(signal) if signal else -1
        result = CommandResult.from_json(final)
        result.stdout = "".join(self._text["stdout"])
        result.stderr = "".join(self._text["stderr"])
        return result


def command_body(
    cmd: Command,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    timeout: Optional[float] = None,
    stdin: Union[str, bytes, None] = None,
) -> Dict[str, Any]:
    """The wire form of a command request, checked (``stdin`` as text, or UTF-8 bytes)."""
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
        if isinstance(stdin, (bytes, bytearray)):
            try:
                stdin = bytes(stdin).decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(
                    "stdin must be text or UTF-8 bytes; write binary input to a file and redirect it"
                ) from None
        body["stdin"] = stdin
    return body


def _http_timeout(timeout: Optional[float]) -> float:
    return (timeout or 60.0) + 30.0


def _process_list(data: Any) -> List[ProcessInfo]:
    items: List[Any] = (
        (data.get("processes") or data.get("items") or []) if isinstance(data, dict) else (data or [])
    )
    return [ProcessInfo.from_json(p) for p in items]


class _ProcessCalls:
    """The requests of one background process, shared by both faces."""

    def __init__(self, session_path: str, info: Mapping[str, Any]) -> None:
        self._session_path = session_path
        self.state = ProcessInfo.from_json(info)
        """The process as last seen (:meth:`refresh` updates it)."""
        self.pid = self.state.pid

    @property
    def info(self) -> Dict[str, Any]:
        """The last seen wire form of the process."""
        return self.state.raw

    @property
    def path(self) -> str:
        """``/sessions/{id}/processes/{pid}``."""
        return f"{self._session_path}/processes/{self.pid}"

    @property
    def oom_killed(self) -> bool:
        """Whether the kernel's out-of-memory killer ended the process, as of the last
        :meth:`refresh` (``oomKilled`` of its status)."""
        return self.state.oom_killed

    def _refresh_call(self) -> Call[ProcessInfo]:
        def keep(data: Any) -> ProcessInfo:
            self.state = ProcessInfo.from_json({"pid": self.pid, **(data or {})})
            return self.state

        return Call("GET", self.path, parse=keep)

    def _stdin_call(self, data: Union[str, bytes], eof: bool) -> Call[None]:
        return Call(
            "POST",
            f"{self.path}/stdin",
            params={"eof": "true" if eof else None},
            content=data.encode() if isinstance(data, str) else data,
            headers={"Content-Type": "application/octet-stream"},
            parse=lambda _: None,
        )

    def _signal_call(self, signal: Union[str, int]) -> Call[None]:
        return Call("POST", f"{self.path}/signal", json_body={"signal": signal}, parse=lambda _: None)

    def _remove_call(self) -> Call[None]:
        return Call("DELETE", self.path, parse=lambda _: None)

    def _stream_path(self, from_seq: int) -> str:
        return f"{self.path}/stream?from={from_seq}"


class Process(_ProcessCalls):
    """A background process started with ``commands.run(..., background=True)``."""

    def __init__(self, transport: Transport, session_path: str, info: Mapping[str, Any]) -> None:
        super().__init__(session_path, info)
        self._transport = transport

    def refresh(self) -> ProcessInfo:
        """Fetches the process's current state."""
        return self._transport.call(self._refresh_call())

    def send_stdin(self, data: Union[str, bytes], eof: bool = False) -> None:
        """Writes to the process's standard input; ``eof=True`` closes it afterwards."""
        self._transport.call(self._stdin_call(data, eof))

    def close_stdin(self) -> None:
        """Closes the process's standard input (end of file)."""
        self.send_stdin(b"", eof=True)

    def signal(self, signal: Union[str, int] = "TERM") -> None:
        """Sends a signal (``"TERM"``, ``"KILL"``, ``"INT"`` or a number)."""
        self._transport.call(self._signal_call(signal))

    def kill(self) -> None:
        """Kills the process and everything it started."""
        self.signal("KILL")

    def remove(self) -> None:
        """Kills the process if it runs and forgets it."""
        self._transport.call(self._remove_call())

    def stream(self, from_seq: int = 0) -> Iterator[OutputChunk]:
        """The process's output from ``from_seq`` as it comes, until it exits."""
        output = CommandOutput()
        with ws_connect(self._transport, self._stream_path(from_seq)) as ws:
            reader = FrameReader(ws)
            for frame in reader:
                yield from output.feed(frame)
            output.ended(reader)
        yield from output.flush()
        # A stream that ended before the exit (the session deleted, the connection lost) is
        # an error, not the end of the output.
        output.finish()

    def wait(
        self,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        from_seq: int = 0,
    ) -> CommandResult:
        """Streams the process's output from ``from_seq`` until it exits."""
        output = CommandOutput(on_stdout, on_stderr)
        with ws_connect(self._transport, self._stream_path(from_seq)) as ws:
            reader = FrameReader(ws)
            for frame in reader:
                output.feed(frame)
            output.ended(reader)
        return output.finish()


class AsyncProcess(_ProcessCalls):
    """:class:`Process` for event loops."""

    def __init__(
        self, transport: AsyncTransport, session_path: str, info: Mapping[str, Any]
    ) -> None:
        super().__init__(session_path, info)
        self._transport = transport

    async def refresh(self) -> ProcessInfo:
        """Fetches the process's current state."""
        return await self._transport.call(self._refresh_call())

    async def send_stdin(self, data: Union[str, bytes], eof: bool = False) -> None:
        """Writes to the process's standard input; ``eof=True`` closes it afterwards."""
        await self._transport.call(self._stdin_call(data, eof))

    async def close_stdin(self) -> None:
        """Closes the process's standard input (end of file)."""
        await self.send_stdin(b"", eof=True)

    async def signal(self, signal: Union[str, int] = "TERM") -> None:
        """Sends a signal (``"TERM"``, ``"KILL"``, ``"INT"`` or a number)."""
        await self._transport.call(self._signal_call(signal))

    async def kill(self) -> None:
        """Kills the process and everything it started."""
        await self.signal("KILL")

    async def remove(self) -> None:
        """Kills the process if it runs and forgets it."""
        await self._transport.call(self._remove_call())

    async def stream(self, from_seq: int = 0) -> AsyncIterator[OutputChunk]:
        """The process's output from ``from_seq`` as it comes, until it exits."""
        output = CommandOutput()
        async with ws_connect_async(self._transport, self._stream_path(from_seq)) as ws:
            reader = AsyncFrameReader(ws)
            async for frame in reader:
                for chunk in output.feed(frame):
                    yield chunk
            output.ended(reader)
        for chunk in output.flush():
            yield chunk
        output.finish()

    async def wait(
        self,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        from_seq: int = 0,
    ) -> CommandResult:
        """Streams the process's output from ``from_seq`` until it exits."""
        output = CommandOutput(on_stdout, on_stderr)
        async with ws_connect_async(self._transport, self._stream_path(from_seq)) as ws:
            reader = AsyncFrameReader(ws)
            async for frame in reader:
                output.feed(frame)
            output.ended(reader)
        return output.finish()


class _CommandCalls:
    """The requests of one session's commands, shared by both faces."""

    def __init__(self, session_path: str) -> None:
        self._session_path = session_path

    def _one_shot_call(self, body: Mapping[str, Any], timeout: Optional[float]) -> Call[CommandResult]:
        return Call(
            "POST",
            f"{self._session_path}/commands",
            json_body=dict(body),
            timeout=_http_timeout(timeout),
            parse=lambda data: CommandResult.from_json(data or {}),
        )

    def _background_call(self, body: Mapping[str, Any], timeout: Optional[float]) -> Call[Dict[str, Any]]:
        return Call(
            "POST",
            f"{self._session_path}/commands",
            json_body={**body, "background": True},
            timeout=_http_timeout(timeout),
            parse=lambda data: dict(data or {}),
        )

    def _list_call(self) -> Call[List[ProcessInfo]]:
        return Call("GET", f"{self._session_path}/processes", parse=_process_list)

    @property
    def _stream_path(self) -> str:
        return f"{self._session_path}/commands/stream"

    @staticmethod
    def _stream_opening(body: Mapping[str, Any], stdin: Optional[str]) -> List[str]:
        """The messages that start a streamed command: the request, then (like the one-shot
        route) an end of file when there is nothing to read on standard input."""
        messages = [json.dumps(body)]
        if stdin is None:
            messages.append(json.dumps({"type": "eof"}))
        return messages


def _streaming_refused(e: SandboxAPIError) -> bool:
    """Whether a server answered that it has no streaming route."""
    return e.status_code in (404, 405)


def _hand_over(
    result: CommandResult,
    on_stdout: Optional[OutputCallback],
    on_stderr: Optional[OutputCallback],
) -> CommandResult:
    if on_stdout is not None and result.stdout:
        on_stdout(result.stdout)
    if on_stderr is not None and result.stderr:
        on_stderr(result.stderr)
    return result


class Commands(_CommandCalls):
    """Runs commands in one session (``/sessions/{id}/commands``)."""

    def __init__(self, transport: Transport, session_path: str) -> None:
        super().__init__(session_path)
        self._transport = transport

    @overload
    def run(
        self,
        cmd: Command,
        env: Optional[Mapping[str, str]] = ...,
        cwd: Optional[str] = ...,
        timeout: Optional[float] = ...,
        on_stdout: Optional[OutputCallback] = ...,
        on_stderr: Optional[OutputCallback] = ...,
        background: Literal[False] = ...,
        stdin: Optional[str] = ...,
    ) -> CommandResult: ...

    @overload
    def run(
        self,
        cmd: Command,
        env: Optional[Mapping[str, str]] = ...,
        cwd: Optional[str] = ...,
        timeout: Optional[float] = ...,
        on_stdout: Optional[OutputCallback] = ...,
        on_stderr: Optional[OutputCallback] = ...,
        *,
        background: Literal[True],
        stdin: Optional[str] = ...,
    ) -> Process: ...

    def run(
        self,
        cmd: Command,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        background: bool = False,
        stdin: Optional[str] = None,
    ) -> Union[CommandResult, Process]:
        """Runs ``cmd`` (a shell command line, or an argv list run without a shell).

        Returns a :class:`CommandResult` (``exit_code``, ``stdout``, ``stderr``,
        ``duration_ms``, ``timed_out``); a non-zero exit is not an exception. With
        ``on_stdout``/``on_stderr`` the output is streamed to them as it comes (over the
        streaming route when the server has it, otherwise delivered whole at the end). With
        ``background=True`` it returns a :class:`Process` at once.
        """
        body = command_body(cmd, env, cwd, timeout, stdin)
        if background:
            info = self._transport.call(self._background_call(body, timeout))
            return Process(self._transport, self._session_path, info)
        if on_stdout is None and on_stderr is None:
            return self._transport.call(self._one_shot_call(body, timeout))
        output = CommandOutput(on_stdout, on_stderr)
        try:
            for _ in self._stream_frames(body, stdin, output):
                pass
            return output.finish()
        except SandboxAPIError as e:
            if not _streaming_refused(e):
                raise
        result = self._transport.call(self._one_shot_call(body, timeout))
        return _hand_over(result, on_stdout, on_stderr)

    def _stream_frames(
        self, body: Mapping[str, Any], stdin: Optional[str], output: CommandOutput
    ) -> Iterator[OutputChunk]:
        with ws_connect(self._transport, self._stream_path) as ws:
            for message in self._stream_opening(body, stdin):
                ws.send(message)
            reader = FrameReader(ws)
            for frame in reader:
                yield from output.feed(frame)
            output.ended(reader)
        yield from output.flush()
        # A stream that ended before the exit (the session deleted, the connection lost) is
        # an error, not the end of the output.
        output.finish()

    def stream(
        self,
        cmd: Command,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        stdin: Optional[str] = None,
    ) -> Iterator[OutputChunk]:
        """Runs ``cmd`` and yields its output as it comes; a non-zero exit is not an error
        (use :meth:`run` with callbacks to get the exit code too)."""
        body = command_body(cmd, env, cwd, timeout, stdin)
        return self._stream_frames(body, stdin, CommandOutput())

    def list_processes(self) -> List[ProcessInfo]:
        """The session's background processes."""
        return self._transport.call(self._list_call())

    def process(self, pid: Union[int, str]) -> Process:
        """A handle on a background process."""
        return Process(self._transport, self._session_path, {"pid": pid})


class AsyncCommands(_CommandCalls):
    """:class:`Commands` for event loops."""

    def __init__(self, transport: AsyncTransport, session_path: str) -> None:
        super().__init__(session_path)
        self._transport = transport

    @overload
    async def run(
        self,
        cmd: Command,
        env: Optional[Mapping[str, str]] = ...,
        cwd: Optional[str] = ...,
        timeout: Optional[float] = ...,
        on_stdout: Optional[OutputCallback] = ...,
        on_stderr: Optional[OutputCallback] = ...,
        background: Literal[False] = ...,
        stdin: Optional[str] = ...,
    ) -> CommandResult: ...

    @overload
    async def run(
        self,
        cmd: Command,
        env: Optional[Mapping[str, str]] = ...,
        cwd: Optional[str] = ...,
        timeout: Optional[float] = ...,
        on_stdout: Optional[OutputCallback] = ...,
        on_stderr: Optional[OutputCallback] = ...,
        *,
        background: Literal[True],
        stdin: Optional[str] = ...,
    ) -> AsyncProcess: ...

    async def run(
        self,
        cmd: Command,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        background: bool = False,
        stdin: Optional[str] = None,
    ) -> Union[CommandResult, AsyncProcess]:
        """Runs ``cmd``; see :meth:`Commands.run`."""
        body = command_body(cmd, env, cwd, timeout, stdin)
        if background:
            info = await self._transport.call(self._background_call(body, timeout))
            return AsyncProcess(self._transport, self._session_path, info)
        if on_stdout is None and on_stderr is None:
            return await self._transport.call(self._one_shot_call(body, timeout))
        output = CommandOutput(on_stdout, on_stderr)
        try:
            async for _ in self._stream_frames(body, stdin, output):
                pass
            return output.finish()
        except SandboxAPIError as e:
            if not _streaming_refused(e):
                raise
        result = await self._transport.call(self._one_shot_call(body, timeout))
        return _hand_over(result, on_stdout, on_stderr)

    async def _stream_frames(
        self, body: Mapping[str, Any], stdin: Optional[str], output: CommandOutput
    ) -> AsyncIterator[OutputChunk]:
        async with ws_connect_async(self._transport, self._stream_path) as ws:
            for message in self._stream_opening(body, stdin):
                await ws.send(message)
            reader = AsyncFrameReader(ws)
            async for frame in reader:
                for chunk in output.feed(frame):
                    yield chunk
            output.ended(reader)
        for chunk in output.flush():
            yield chunk
        output.finish()

    def stream(
        self,
        cmd: Command,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        stdin: Optional[str] = None,
    ) -> AsyncIterator[OutputChunk]:
        """Runs ``cmd`` and yields its output as it comes: ``async for chunk in …``."""
        body = command_body(cmd, env, cwd, timeout, stdin)
        return self._stream_frames(body, stdin, CommandOutput())

    async def list_processes(self) -> List[ProcessInfo]:
        """The session's background processes."""
        return await self._transport.call(self._list_call())

    def process(self, pid: Union[int, str]) -> AsyncProcess:
        """A handle on a background process."""
        return AsyncProcess(self._transport, self._session_path, {"pid": pid})
