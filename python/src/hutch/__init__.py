"""Python SDK for hutch, a self-hosted sandbox server.

Quick start::

    from hutch import SessionsClient

    with SessionsClient("http://127.0.0.1:7420/v1", bearer_token=TOKEN) as client:
        session = client.create_session(ttl=600, metadata={"owner": "me"})
        print(session.commands.run("echo hello").stdout)
        interpreter = session.code_interpreter()
        interpreter.execute("x = 41 + 1\nprint(x)", on_stdout=print)
        client.delete_session(session.session_id)

The same from an event loop::

    from hutch import AsyncSessionsClient

    async with AsyncSessionsClient("http://127.0.0.1:7420/v1", bearer_token=TOKEN) as client:
        session = await client.create_session(ttl=600)
        print((await session.commands.run("echo hello")).stdout)
        await client.delete_session(session.session_id)
"""

from .errors import (
    ERROR_CODES,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    SandboxUnavailableError,
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
    NotSupportedError,
    UnauthorizedError,
)
from .code import AsyncCode, Code, CodeResult
from .commands import (
    AsyncCommands,
    AsyncProcess,
    CommandResult,
    Commands,
    OutputChunk,
    Process,
    ProcessInfo,
)
from .files import AsyncFiles, FileInfo, Files, WriteInfo
from .images import (
    AsyncImages,
    Image,
    ImageConfig,
    ImageDetail,
    ImageLayer,
    Images,
    PullProgress,
)
from .interactive import (
    InteractiveResult,
    InteractiveSandboxSession,
    InteractiveSettings,
    KernelType,
)
from .interpreter import (
    Artifact,
    AsyncCodeInterpreter,
    CodeInterpreter,
    Execution,
    ExecutionError,
    HistoryEntry,
    InterpreterContext,
    Result,
)
from .ports import AsyncPorts, ListeningPort, PortLink, Ports
from .pty import AsyncTerminal, Terminal
from .storage import (
    AsyncContextManager,
    AsyncStorageContexts,
    ContextManager,
    StorageContexts,
    ContextInfoResult,
    ContextStatusData,
    ContextSync,
    ContextSyncResult,
    StorageContext,
)
from .sessions import (
    AsyncSession,
    AsyncSessionHandle,
    AsyncSessionList,
    AsyncSessionsClient,
    SessionInfo,
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
    "AsyncSessionsClient",
    "AsyncSession",
    "AsyncSessionHandle",
    "AsyncSessionList",
    "SessionInfo",
    "Commands",
    "AsyncCommands",
    "AsyncProcess",
    "ProcessInfo",
    "OutputChunk",
    "Code",
    "AsyncCode",
    "Files",
    "AsyncFiles",
    "WriteInfo",
    "AsyncCodeInterpreter",
    "InterpreterContext",
    "HistoryEntry",
    "AsyncPorts",
    "AsyncImages",
    "Terminal",
    "AsyncTerminal",
    "ContextManager",
    "AsyncContextManager",
    "StorageContexts",
    "AsyncStorageContexts",
    "ERROR_CODES",
    "InvalidRequestError",
    "ForbiddenError",
    "NotFoundError",
    "ConflictError",
    "PayloadTooLargeError",
    "SandboxUnavailableError",
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
    "NotSupportedError",
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
