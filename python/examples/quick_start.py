"""Basic usage of the sessions API: create, get, list, delete.

    export HUTCH_URL=http://127.0.0.1:7420/v1
    export HUTCH_TOKEN=$(hutch token --sub me)
    python examples/quick_start.py
"""

import os

from hutch import SessionsClient

client = SessionsClient(
    api_url=os.environ["HUTCH_URL"],
    bearer_token=os.environ["HUTCH_TOKEN"],
)

# Create
session = client.create_session(ttl=3600, image="default")
print(f"created {session.session_id} ({session.status.value}), expires {session.expires_at}")

# Get
details = client.get_session(session.session_id)
print(f"got {details.session_id}: image {details.image}")

# List
result = client.list_sessions(limit=10)
print(f"{result.total} session(s)")

# Delete
client.delete_session(session.session_id)
print(f"deleted {session.session_id}")

client.close()
