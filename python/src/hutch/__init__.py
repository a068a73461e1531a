"""Python SDK for hutch, a self-hosted sandbox server.

Quick start::

    from hutch import SessionsClient

    with SessionsClient("http://127.0.0.1:7420/v1", bearer_token=TOKEN) as client:
        session = client.create_session(ttl=600, metadata={"owner": "me"})
        print(session.commands.run("echo hello").stdout)
        interpreter = session.code_interpreter()
        interpreter.execute("x = 41 + 1\nprint(x)", on_stdout=print)
        client.delete_session(session.session_id)
"""

from .errors import (
    ContextError,
    ContextNotFoundError,
    ErrorResponse,
    ExecutionTimeoutError,
    HTTPError,
    RateLimitError,
    SandboxAPIError,
    SandboxConnectionError,
    SandboxOperationError,
    SessionNotFoundError,
    SessionPausedError,
    UnauthorizedError,
)
from .code import CodeResult
from .commands import CommandResult, Process
from .files import FileInfo
from .images import Image, ImageConfig, ImageDetail, ImageLayer, Images, PullProgress
from .interactive import (
    InteractiveResult,
    InteractiveSandboxSession,
    InteractiveSettings,
    KernelType,
)
from .interpreter import Artifact, CodeInterpreter, Execution, ExecutionError, Result
from .ports import ListeningPort, PortLink, Ports
from .storage import (
    ContextInfoResult,
    ContextStatusData,
    ContextSync,
    ContextSyncResult,
    StorageContext,
)
from .sessions import (
    MAX_TTL,
    MIN_TTL,
    Resources,
    Session,
    SessionHandle,
    SessionList,
    SessionsClient,
    SessionStats,
    SessionStatus,
    network_policy,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "SessionsClient",
    "Session",
    "SessionHandle",
    "SessionList",
    "SessionStatus",
    "SessionStats",
    "Resources",
    "MIN_TTL",
    "MAX_TTL",
    "network_policy",
    "SandboxAPIError",
    "SandboxConnectionError",
    "UnauthorizedError",
    "SessionNotFoundError",
    "SessionPausedError",
    "RateLimitError",
    "SandboxOperationError",
    "ContextNotFoundError",
    "ContextError",
    "ExecutionTimeoutError",
    "ErrorResponse",
    "HTTPError",
    "CommandResult",
    "Process",
    "CodeResult",
    "FileInfo",
    "CodeInterpreter",
    "Execution",
    "ExecutionError",
    "Result",
    "Artifact",
    "InteractiveSandboxSession",
    "InteractiveSettings",
    "InteractiveResult",
    "KernelType",
    "StorageContext",
    "ContextStatusData",
    "ContextInfoResult",
    "ContextSyncResult",
    "ContextSync",
    "Ports",
    "ListeningPort",
    "PortLink",
    "Image",
    "ImageDetail",
    "ImageLayer",
    "ImageConfig",
    "Images",
    "PullProgress",
]
