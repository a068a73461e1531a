"""Stateless code runs (``POST /sessions/{id}/code``)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.requires_route("POST", "/v1/sessions/{id}/code")


@pytest.mark.parametrize(
    "language, code, expected",
    [
        ("python", "print(6 * 7)", "42\n"),
        ("javascript", "console.log(6 * 7)", "42\n"),
        ("bash", "echo $((6 * 7))", "42\n"),
    ],
)
def test_run_code(session: Any, language: str, code: str, expected: str) -> None:
    result = session.code.run(language, code)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == expected


def test_each_run_is_a_fresh_process(session: Any) -> None:
    session.code.run("python", "x = 1")
    result = session.code.run("python", "print(x)")
    assert result.exit_code != 0
    assert "NameError" in result.stderr


def test_env_and_timeout(session: Any) -> None:
    result = session.code.run("python", "import os; print(os.environ['A'])", env={"A": "b"})
    assert result.stdout == "b\n"
    slow = session.code.run("python", "import time; time.sleep(30)", timeout=1)
    assert slow.timed_out


def test_out_of_memory_is_reported(client: Any) -> None:
    session = client.create_session(ttl=600, resources={"memoryMb": 64})
    assert not session.code.run("python", "print('fine')").oom_killed
    hog = session.code.run("python", "b = bytearray(1 << 30)")
    assert hog.oom_killed
    assert hog.exit_code != 0


def test_unknown_language_is_refused_locally(session: Any) -> None:
    with pytest.raises(ValueError):
        session.code.run("cobol", "DISPLAY 'HI'")
