"""Terminals: a real controlling terminal in the session, resizable, with the program's exit."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.requires_route("GET", "/v1/sessions/{id}/pty")


def _read_until(term: Any, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = term.read(timeout=30)
        assert chunk, f"the terminal ended before {marker!r}: {seen!r}"
        seen += chunk
    return seen


def test_a_terminal_runs_a_shell_and_reports_its_exit(session: Any) -> None:
    with session.pty(cols=100, rows=30) as term:
        term.write("tty; stty size; exit 7\n")
        output = term.read_all()
    assert b"/dev/pts/" in output
    assert b"30 100" in output
    assert term.exited and term.exit_code == 7


def test_resize_reaches_the_program(session: Any) -> None:
    with session.pty(command="sh") as term:
        # The marker is computed, so the terminal's echo of the line does not match it.
        term.write("stty size; echo first-$((1 + 1))\n")
        assert b"24 80" in _read_until(term, b"first-2\r\n")
        term.resize(132, 43)
        term.write("stty size; echo second-$((1 + 1))\n")
        assert b"43 132" in _read_until(term, b"second-2\r\n")
        term.write("exit\n")
        term.read_all()
    assert term.exit_code == 0


def test_bad_sizes_are_refused_before_any_request(session: Any) -> None:
    with pytest.raises(ValueError):
        session.pty(cols=0)
    with pytest.raises(ValueError):
        session.pty(rows=1001)
