"""Commands inside a session: one-shot, streamed to callbacks, in the background."""

from __future__ import annotations

import time
from typing import Any, List

import pytest

from hutch import SandboxAPIError, SandboxOperationError, SessionNotFoundError, SessionsClient
from hutch.commands import AsyncProcess, CommandResult, Process

# Fills memory until the kernel's OOM killer ends it (`tail` keeps the newline-free line whole).
MEMORY_HOG = "head -c 500m /dev/zero | tail"


def test_run_a_shell_command(session: Any) -> None:
    result = session.commands.run("echo hello; echo oops >&2; exit 3")
    assert isinstance(result, CommandResult)
    assert result.stdout == "hello\n"
    assert result.stderr == "oops\n"
    assert result.exit_code == 3
    assert not result.ok
    assert not result.timed_out
    assert result.duration_ms >= 0


def test_argv_env_cwd_and_stdin(session: Any) -> None:
    result = session.commands.run(
        ["sh", "-c", 'echo "$GREETING from $(pwd)"; cat'],
        env={"GREETING": "hi"},
        cwd="/tmp",
        stdin="piped in",
    )
    assert result.ok, result.stderr
    assert result.stdout == "hi from /tmp\npiped in"
    assert session.commands.run("cat", stdin=b"bytes in").stdout == "bytes in"
    with pytest.raises(ValueError):
        session.commands.run("cat", stdin=b"\xff")


def test_timeout_kills_the_command(session: Any) -> None:
    started = time.monotonic()
    result = session.commands.run("sleep 30", timeout=1)
    assert result.timed_out
    assert result.exit_code != 0
    assert time.monotonic() - started < 15


def test_callbacks_receive_the_output(session: Any) -> None:
    out: List[str] = []
    err: List[str] = []
    result = session.commands.run(
        "for i in 1 2 3; do echo line $i; done; echo bad >&2",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert result.ok
    assert "".join(out) == "line 1\nline 2\nline 3\n" == result.stdout
    assert "".join(err) == "bad\n" == result.stderr


def test_files_written_by_one_command_are_seen_by_the_next(session: Any) -> None:
    session.commands.run("echo persisted > /workspace/note.txt")
    assert session.commands.run("cat /workspace/note.txt").stdout == "persisted\n"


def test_bad_arguments(session: Any) -> None:
    with pytest.raises(ValueError):
        session.commands.run("")
    with pytest.raises(ValueError):
        session.commands.run([])
    with pytest.raises(ValueError):
        session.commands.run("true", timeout=0)
    with pytest.raises(SandboxOperationError) as info:
        session.commands.run("true", cwd="relative/path")
    assert info.value.status_code == 400


@pytest.mark.requires_route("GET", "/v1/sessions/{id}/commands/stream")
def test_a_stream_cut_short_raises_rather_than_ending_quietly(client: SessionsClient) -> None:
    session = client.create_session(ttl=600)
    seen: List[str] = []
    with pytest.raises(SandboxAPIError) as raised:
        for chunk in session.commands.stream("echo started; sleep 30"):
            seen.append(chunk.text)
            # The session goes while its command runs: the stream ends without an exit.
            client.delete_session(session.session_id)
    assert seen == ["started\n"]
    # The server says why, with a close frame, rather than cutting the connection.
    assert "closed 1001: the session's sandbox ended the connection" in str(raised.value)


def test_commands_in_a_deleted_session(client: SessionsClient) -> None:
    session = client.create_session(ttl=600)
    client.delete_session(session.session_id)
    with pytest.raises(SessionNotFoundError):
        session.commands.run("true")


@pytest.mark.requires_route("GET", "/v1/sessions/{id}/commands/stream")
def test_streamed_output_arrives_before_the_command_ends(session: Any) -> None:
    stamps: List[float] = []
    started = time.monotonic()
    result = session.commands.run(
        "echo first; sleep 2; echo second", on_stdout=lambda _: stamps.append(time.monotonic())
    )
    assert result.stdout == "first\nsecond\n"
    assert stamps and stamps[0] - started < 1.5


@pytest.mark.requires_route("GET", "/v1/sessions/{id}/processes")
def test_background_process(session: Any) -> None:
    process = session.commands.run("echo started; sleep 30", background=True)
    assert isinstance(process, (Process, AsyncProcess))
    listed = session.commands.list_processes()
    assert any(p.pid == process.pid for p in listed)
    assert process.refresh().status == "running"
    # Killed only once it has printed (its output's next sequence number moved past 0).
    deadline = time.monotonic() + 30
    while process.refresh().raw.get("nextSeq", 0) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    result = process.wait()
    assert "started" in result.stdout
    assert result.exit_code == 128 + 9
    assert process.refresh().status == "exited"


@pytest.mark.requires_route("POST", "/v1/sessions/{id}/processes/{pid}/stdin")
def test_background_process_reads_stdin(session: Any) -> None:
    process = session.commands.run(["sh", "-c", "read line; echo got $line"], background=True)
    process.send_stdin("hello\n", eof=True)
    result = process.wait()
    assert result.stdout == "got hello\n"
    assert result.exit_code == 0


@pytest.mark.requires_route("GET", "/v1/sessions/{id}/processes")
def test_out_of_memory_is_reported(client: SessionsClient) -> None:
    session = client.create_session(ttl=600, resources={"memoryMb": 64})
    fine = session.commands.run("echo fine")
    assert fine.ok and not fine.oom_killed

    one_shot = session.commands.run(MEMORY_HOG)
    assert one_shot.oom_killed
    assert not one_shot.ok and not one_shot.timed_out

    streamed = session.commands.run(MEMORY_HOG, on_stderr=lambda _: None)
    assert streamed.oom_killed

    process = session.commands.run(MEMORY_HOG, background=True)
    assert process.wait().oom_killed
    process.refresh()
    assert process.info["status"] == "exited"
    assert process.oom_killed

    survivor = session.commands.run("echo still here", background=True)
    assert survivor.wait().stdout == "still here\n"
    survivor.refresh()
    assert not survivor.oom_killed
