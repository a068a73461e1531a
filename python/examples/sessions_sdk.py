"""The six examples of the sessions SDK guide, run one after the other.

    export HUTCH_URL=http://127.0.0.1:7420/v1
    export HUTCH_TOKEN=$(hutch token --sub me)
    python examples/sessions_sdk.py
"""

import os
import uuid

from hutch import (
    RateLimitError,
    SessionNotFoundError,
    SessionsClient,
    SessionStatus,
    UnauthorizedError,
)

API_URL = os.environ["HUTCH_URL"]
TOKEN = os.environ["HUTCH_TOKEN"]


def example_basic() -> None:
    """1. Basic session management."""
    client = SessionsClient(api_url=API_URL, bearer_token=TOKEN)
    session = client.create_session(ttl=3600, image="default")
    details = client.get_session(session.session_id)
    assert details.status == SessionStatus.RUNNING
    print(f"[1] created and fetched {details.session_id}")
    client.delete_session(session.session_id)
    client.close()


def example_context_manager() -> None:
    """2. Context manager usage."""
    with SessionsClient(api_url=API_URL, bearer_token=TOKEN) as client:
        session = client.create_session(ttl=7200, metadata={"user": "alice", "project": "test"})
        print(f"[2] session {session.session_id} with metadata {session.metadata}")
        client.delete_session(session.session_id)


def example_listing() -> None:
    """3. Listing and pagination."""
    with SessionsClient(api_url=API_URL, bearer_token=TOKEN) as client:
        created = [client.create_session(ttl=600) for _ in range(3)]
        offset, seen = 0, []
        while True:
            page = client.list_sessions(limit=2, offset=offset)
            seen.extend(s.session_id for s in page.sessions)
            offset += len(page.sessions)
            if offset >= page.total or not page.sessions:
                break
        assert [s.session_id for s in created] == seen[-3:]
        print(f"[3] paged through {len(seen)} sessions two at a time")
        for s in created:
            client.delete_session(s.session_id)


def example_errors() -> None:
    """4. Error handling."""
    try:
        with SessionsClient(api_url=API_URL, bearer_token=TOKEN) as client:
            client.get_session(str(uuid.uuid4()))
    except UnauthorizedError as e:
        raise SystemExit(f"Auth failed: {e.message}")
    except SessionNotFoundError as e:
        print(f"[4] Not found: {e.message} (status {e.status_code}, code {e.code})")
    except RateLimitError as e:
        print(f"[4] Rate limited: {e.limit}, reset: {e.reset}")
    try:
        with SessionsClient(api_url=API_URL, bearer_token="wrong") as client:
            client.list_sessions()
    except UnauthorizedError as e:
        print(f"[4] Auth failed: {e.message}")
    try:
        SessionsClient(api_url=API_URL, bearer_token=TOKEN).create_session(ttl=30)
    except ValueError as e:
        print(f"[4] Refused before sending: {e}")


def example_lifecycle() -> None:
    """5. Session lifecycle."""
    with SessionsClient(api_url=API_URL, bearer_token=TOKEN) as client:
        session = client.create_session(ttl=600)
        print(f"[5] {session.session_id}: {session.status.value}, expires {session.expires_at:%H:%M:%S}")
        result = session.commands.run("echo hello from the sandbox")
        print(f"[5] command said {result.stdout.strip()!r}")
        client.delete_session(session.session_id)
        try:
            client.get_session(session.session_id)
        except SessionNotFoundError:
            print("[5] gone after delete")


def example_batch() -> None:
    """6. Batch operations."""
    with SessionsClient(api_url=API_URL, bearer_token=TOKEN) as client:
        sessions = [client.create_session(ttl=600, metadata={"batch": str(i)}) for i in range(3)]
        for s in sessions:
            client.delete_session(s.session_id)
        remaining = {s.session_id for s in client.list_sessions(limit=100)}
        assert not remaining & {s.session_id for s in sessions}
        print(f"[6] created and deleted {len(sessions)} sessions")


if __name__ == "__main__":
    example_basic()
    example_context_manager()
    example_listing()
    example_errors()
    example_lifecycle()
    example_batch()
    print("all examples passed")
