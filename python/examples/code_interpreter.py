"""The multi-context code interpreter guide, run against a hutch server.

    export HUTCH_URL=http://127.0.0.1:7420/v1
    export HUTCH_TOKEN=$(hutch token --sub me)
    python examples/code_interpreter.py
"""

from hutch import ContextError, HTTPError, SessionsClient


def default_context(sandbox):
    interpreter = sandbox.code_interpreter()
    # Execute code (uses the default context automatically)
    interpreter.execute(
        code="x = 42\nprint(x)",
        on_stdout=lambda text: print(f"Output: {text}", end=""),
        on_error=lambda name, value, tb: print(f"Error: {name}: {value}"),
    )


def execute_in_context(sandbox):
    interpreter = sandbox.code_interpreter()
    ctx = interpreter.create_context(cwd="/workspace/project")
    print(f"Context ID: {ctx['id']}")
    print(f"Working Directory: {ctx['cwd']}")
    print(f"Language: {ctx['language']}")
    print(f"Active: {ctx['active']}")
    interpreter.execute(
        code="import os\nprint(os.getcwd())",
        context_id=ctx["id"],
        on_stdout=lambda text: print(text, end=""),
    )
    interpreter.delete_context(ctx["id"])


def compare_environments(sandbox):
    """Example 2: multiple isolated environments."""
    interpreter = sandbox.code_interpreter()
    ctx1 = interpreter.create_context(cwd="/workspace/env1")
    ctx2 = interpreter.create_context(cwd="/workspace/env2")
    interpreter.execute(code="config = {'version': '1.0'}", context_id=ctx1["id"])
    interpreter.execute(code="config = {'version': '2.0'}", context_id=ctx2["id"])

    def print_version(text):
        print(f"Version: {text}", end="")

    interpreter.execute(code="print(config['version'])", context_id=ctx1["id"], on_stdout=print_version)
    interpreter.execute(code="print(config['version'])", context_id=ctx2["id"], on_stdout=print_version)
    interpreter.delete_context(ctx1["id"])
    interpreter.delete_context(ctx2["id"])


def data_processing_pipeline(sandbox):
    """Example 3: a long-running context keeps its state (a DataFrame) between executions."""
    sandbox.commands.run("mkdir -p /workspace/data && printf 'value\\n1\\n2\\n3\\n' > /workspace/data/data.csv")
    interpreter = sandbox.code_interpreter()
    ctx = interpreter.create_context(cwd="/workspace/data")
    try:
        interpreter.execute(
            code="import pandas as pd\ndf = pd.read_csv('data.csv')\nprint(f'Loaded {len(df)} rows')",
            context_id=ctx["id"],
            on_stdout=print,
        )
        interpreter.execute(
            code="df['processed'] = df['value'] * 2\nprint(f'Processed {len(df)} rows')",
            context_id=ctx["id"],
            on_stdout=print,
        )
        interpreter.execute(
            code="df.to_csv('output.csv', index=False)\nprint('Saved results')",
            context_id=ctx["id"],
            on_stdout=print,
        )
    finally:
        interpreter.delete_context(ctx["id"])
    print(sandbox.commands.run("cat /workspace/data/output.csv").stdout, end="")


def demonstrate_auto_restart(sandbox):
    """Example 4: a context restarts with fresh state after exit()."""
    interpreter = sandbox.code_interpreter()
    ctx = interpreter.create_context()
    interpreter.execute(code="x = 100\nprint(f'x = {x}')", context_id=ctx["id"], on_stdout=print)
    interpreter.execute(code="exit()", context_id=ctx["id"])
    interpreter.execute(
        code="print(f'x = {x}')",
        context_id=ctx["id"],
        on_error=lambda name, val, tb: print(f"Error: {name}"),
    )
    interpreter.delete_context(ctx["id"])


def manage_contexts(sandbox):
    """Example 5: create several, list, execute in each, clean up."""
    interpreter = sandbox.code_interpreter()
    contexts = []
    for i in range(3):
        ctx = interpreter.create_context(cwd=f"/workspace/project{i}")
        contexts.append(ctx)
        print(f"Created context: {ctx['id']}")
    all_contexts = interpreter.list_contexts()
    print(f"\nTotal contexts: {len(all_contexts)}")
    for ctx in contexts:
        interpreter.execute(code=f"print('Hello from {ctx['id']}')", context_id=ctx["id"], on_stdout=print)
    for ctx in contexts:
        interpreter.delete_context(ctx["id"])
        print(f"Deleted context: {ctx['id']}")


def error_handling(sandbox):
    interpreter = sandbox.code_interpreter()
    try:
        interpreter.execute(code="print('test')", context_id="nonexistent-id")
    except ContextError as e:
        print(f"Error: {e}")
    ctx = interpreter.create_context()
    try:
        interpreter.execute(code="import time; time.sleep(100)", context_id=ctx["id"], timeout=2)
    except TimeoutError as e:
        print(f"Execution timed out: {e}")
    try:
        interpreter.delete_context("default")
    except HTTPError as e:
        print(f"Cannot delete: {e}")
    # Handle context errors gracefully: recreate a missing context.
    ctx_id = "gone-" + ctx["id"]
    try:
        interpreter.execute("print('recovered')", context_id=ctx_id)
    except HTTPError as e:
        if e.response.status_code == 404:
            ctx = interpreter.create_context()
            interpreter.execute("print('recovered')", context_id=ctx["id"], on_stdout=print)
        else:
            raise
    with interpreter.context(cwd="/workspace/scratch") as scoped:
        interpreter.execute("print('scoped')", context_id=scoped["id"], on_stdout=print)


if __name__ == "__main__":
    with SessionsClient() as client:
        sandbox = client.create_session(ttl=600)
        try:
            default_context(sandbox)
            execute_in_context(sandbox)
            compare_environments(sandbox)
            data_processing_pipeline(sandbox)
            demonstrate_auto_restart(sandbox)
            manage_contexts(sandbox)
            error_handling(sandbox)
        finally:
            client.delete_session(sandbox.session_id)
    print("all examples passed")
