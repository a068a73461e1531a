"""The code interpreter, following the multi-context usage guide."""

from __future__ import annotations

import time
from typing import Any, List, Tuple

import pytest

from conftest import HutchServer, run_example
from hutch import (
    ContextError,
    InterpreterContext,
    ExecutionTimeoutError,
    HTTPError,
    SandboxAPIError,
    SessionNotFoundError,
    SessionsClient,
)

pytestmark = pytest.mark.requires_route("POST", "/v1/sessions/{id}/interpreter/contexts")


def test_default_context_keeps_state(session: Any) -> None:
    interpreter = session.code_interpreter()
    out: List[str] = []
    interpreter.execute("x = 42\nprint(x)", on_stdout=out.append)
    assert "".join(out) == "42\n"
    execution = interpreter.execute("x + 1")
    assert execution.text == "43"
    assert execution.error is None
    assert execution.status == "completed"
    assert execution.execution_count is not None


def test_create_list_get_delete_context(session: Any) -> None:
    interpreter = session.code_interpreter()
    ctx = interpreter.create_context(cwd="/workspace/project")
    assert isinstance(ctx, InterpreterContext)
    assert ctx.cwd == "/workspace/project"
    assert ctx.language == "python"
    assert ctx.active is True
    assert ctx["createdAt"] == ctx.created_at  # the wire form, as seed code reads it
    assert [c.id for c in interpreter.list_contexts()] == [ctx.id]
    assert interpreter.get_context(ctx.id).id == ctx.id
    out: List[str] = []
    interpreter.execute("import os\nprint(os.getcwd())", context_id=ctx["id"], on_stdout=out.append)
    assert "".join(out) == "/workspace/project\n"
    interpreter.delete_context(ctx["id"])
    assert interpreter.list_contexts() == []


def test_contexts_are_isolated(session: Any) -> None:
    interpreter = session.code_interpreter()
    with interpreter.context() as one, interpreter.context() as two:
        interpreter.execute("config = {'version': '1.0'}", context_id=one["id"])
        interpreter.execute("config = {'version': '2.0'}", context_id=two["id"])
        assert interpreter.execute("print(config['version'])", context_id=one["id"]).stdout == "1.0\n"
        assert interpreter.execute("print(config['version'])", context_id=two["id"]).stdout == "2.0\n"
    assert interpreter.list_contexts() == []


def test_errors_go_to_on_error_and_state_survives(session: Any) -> None:
    interpreter = session.code_interpreter()
    errors: List[Tuple[str, str, str]] = []
    interpreter.execute("y = 10")
    execution = interpreter.execute("y / 0", on_error=lambda n, v, t: errors.append((n, v, t)))
    assert execution.error is not None and execution.error.name == "ZeroDivisionError"
    assert errors and errors[0][0] == "ZeroDivisionError"
    assert interpreter.execute("print(y)").stdout == "10\n"


def test_exit_restarts_the_context_with_fresh_state(session: Any) -> None:
    interpreter = session.code_interpreter()
    with interpreter.context() as ctx:
        interpreter.execute("x = 100", context_id=ctx["id"])
        gone = interpreter.execute("exit()", context_id=ctx["id"])
        assert gone.status == "exited"
        names: List[str] = []
        interpreter.execute("print(x)", context_id=ctx["id"], on_error=lambda n, v, t: names.append(n))
        assert names == ["NameError"]
        assert interpreter.get_context(ctx["id"])["active"] is True


def test_timeout_raises_timeout_error_and_keeps_state(session: Any) -> None:
    interpreter = session.code_interpreter()
    interpreter.execute("kept = 'yes'")
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        interpreter.execute("import time; time.sleep(100)", timeout=1)
    assert isinstance(info.value, ExecutionTimeoutError)
    assert time.monotonic() - started < 10
    assert interpreter.execute("print(kept)").stdout == "yes\n"


def test_unknown_context_is_a_context_error(session: Any) -> None:
    interpreter = session.code_interpreter()
    with pytest.raises(ContextError) as info:
        interpreter.execute("print('test')", context_id="nonexistent-id")
    assert "nonexistent-id" in str(info.value)
    # Code written for requests.HTTPError works too.
    try:
        interpreter.execute("print('test')", context_id="nonexistent-id")
    except HTTPError as e:
        assert e.response is not None and e.response.status_code == 404


def test_default_context_cannot_be_deleted(session: Any) -> None:
    with pytest.raises(SandboxAPIError) as info:
        session.code_interpreter().delete_context("default")
    assert info.value.status_code == 400


def test_unsupported_language_is_refused(session: Any) -> None:
    with pytest.raises(SandboxAPIError) as info:
        session.code_interpreter().create_context(language="cobol")
    assert info.value.status_code == 400


def test_deleting_an_unknown_context_is_a_404(session: Any) -> None:
    with pytest.raises(SandboxAPIError) as info:
        session.code_interpreter().delete_context("0192f0a4-3c1e-7d2a-9b1c-2d3e4f5a6b7c")
    assert info.value.status_code == 404


def test_envs_apply_to_one_execution(session: Any) -> None:
    interpreter = session.code_interpreter()
    code = "import os; print(os.environ.get('FLAVOUR', 'none'))"
    assert interpreter.execute(code, envs={"FLAVOUR": "mint"}).stdout == "mint\n"
    assert interpreter.execute(code).stdout == "none\n"


def test_artifacts_and_results(session: Any) -> None:
    interpreter = session.code_interpreter()
    artifacts: List[Any] = []
    interpreter.execute(
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3])\nplt.show()",
        on_artifact=artifacts.append,
    )
    assert artifacts and artifacts[0].mime_type == "image/png"
    assert artifacts[0].data.startswith(b"\x89PNG")


def test_callbacks_see_control(session: Any) -> None:
    controls: List[str] = []
    session.code_interpreter().execute("1", on_control=controls.append)
    assert controls == ["completed"]


def test_execute_in_a_deleted_session(client: SessionsClient) -> None:
    session = client.create_session(ttl=600)
    client.delete_session(session.session_id)
    with pytest.raises(SessionNotFoundError):
        session.code_interpreter().execute("1")


def test_example_code_interpreter(hutch_server: HutchServer) -> None:
    out = run_example(hutch_server, "code_interpreter.py")
    assert "Version: 1.0" in out and "Version: 2.0" in out
    assert "Error: NameError" in out
    assert "Loaded 3 rows" in out and "value,processed" in out
    assert "all examples passed" in out
