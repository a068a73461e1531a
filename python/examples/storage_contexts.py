"""Storage contexts: persistent storage bound to a session path, synced on demand.

    export HUTCH_URL=http://127.0.0.1:7420/v1
    export HUTCH_TOKEN=$(hutch token --sub me)
    python examples/storage_contexts.py
"""

import asyncio
import threading
import uuid

from hutch import SessionsClient

with SessionsClient() as client:
    ctx = client.contexts.create(f"project-cache-{uuid.uuid4().hex[:8]}")
    print(f"created storage context {ctx.name} ({ctx.id})")

    session = client.create_session(
        ttl=600, context_syncs=[{"context_id": ctx.id, "path": "/workspace/cache"}]
    )
    session.commands.run("echo kept > /workspace/cache/state.txt")

    # Get context synchronization information.
    info_result = session.context.info()
    if info_result.context_status_data:
        for item in info_result.context_status_data:
            print(f"Context {item.context_id} status: {item.status}")
    else:
        print("No context synchronization tasks found")

    # Asynchronous usage: await the sync.
    async def sync_context():
        result = await session.context.sync()
        if result.success:
            print("Context sync completed successfully")
        else:
            print(f"Context sync failed: {result.error_message}")
        return result

    assert asyncio.run(sync_context()).success

    # Synchronous usage with a callback: returns at once, calls back when done.
    done = threading.Event()
    outcome = []

    def sync_callback(success: bool):
        outcome.append(success)
        print("Context sync completed successfully" if success else "Context sync failed")
        done.set()

    started = session.context.sync(callback=sync_callback, retry_interval=200)
    print(f"sync started: {started.success}")
    assert done.wait(60) and outcome == [True]
    client.delete_session(session.session_id)

    # A new session sees the content.
    again = client.create_session(
        ttl=600, context_syncs=[{"context_id": ctx.id, "path": "/workspace/cache"}]
    )
    print("restored:", again.commands.run("cat /workspace/cache/state.txt").stdout.strip())
    client.delete_session(again.session_id)
    client.contexts.delete(ctx.id)

print("all examples passed")
