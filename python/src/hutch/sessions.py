"""Sessions: create, list, get, update and delete sandboxes (``/v1/sessions``).

:class:`SessionsClient` blocks; :class:`AsyncSessionsClient` is its twin for event loops. Both
send the same requests (built once, here) and return the same models; their sessions hand out
the matching faces of commands, files, code, interpreters, terminals, ports and storage sync.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Generic,
    List,
    Mapping,
    Optional,
    Type,
    TypeVar,
)

from ._http import AsyncTransport, Call, Transport, _Base

if TYPE_CHECKING:
    from .code import AsyncCode, Code
    from .commands import AsyncCommands, Commands
    from .files import AsyncFiles, Files
    from .images import AsyncImages, Image, Images
    from .interpreter import AsyncCodeInterpreter, CodeInterpreter
    from .ports import AsyncPorts, Ports
    from .pty import AsyncTerminal, Terminal
    from .storage import AsyncContextManager, AsyncStorageContexts, ContextManager, StorageContexts

__all__ = [
    "network_policy",
    "MIN_TTL",
    "MAX_TTL",
    "MIN_AUTO_PAUSE",
    "MAX_PAGE",
    "SessionStatus",
    "Resources",
    "Session",
    "SessionStats",
    "SessionList",
    "SessionHandle",
    "SessionsClient",
    "SessionInfo",
    "AsyncSession",
    "AsyncSessionHandle",
    "AsyncSessionList",
    "AsyncSessionsClient",
]

MIN_TTL = 60
"""Shortest session time to live, in seconds."""
MAX_TTL = 28800
"""Longest session time to live, in seconds (8 hours)."""
MIN_AUTO_PAUSE = 10
"""Shortest idle time before a session pauses itself, in seconds."""
MAX_PAGE = 100
"""Largest page ``list_sessions`` accepts."""
EGRESS = ("none", "allow", "all")
"""The egress modes of a network policy."""
MAX_NETWORK_ENTRIES = 256
"""Most entries in a network policy's ``allow`` or ``deny`` list."""


def network_policy(
    egress: str, allow: Optional[List[str]] = None, deny: Optional[List[str]] = None
) -> Dict[str, Any]:
    """The wire form of a network policy, checked.

    ``egress`` is ``"none"``, ``"allow"`` (only ``allow``: DNS names, ``*.`` wildcards, IPv4
    addresses and CIDR ranges) or ``"all"`` (everything but ``deny``). Raises ``ValueError``.
    """
    if egress not in EGRESS:
        raise ValueError(f"egress must be one of {', '.join(EGRESS)}, got {egress!r}")
    body: Dict[str, Any] = {"egress": egress}
    for name, entries in (("allow", allow), ("deny", deny)):
        if entries is None:
            continue
        if isinstance(entries, str) or not all(isinstance(e, str) for e in entries):
            raise ValueError(f"{name} must be a list of strings, got {entries!r}")
        if len(entries) > MAX_NETWORK_ENTRIES:
            raise ValueError(f"{name} has {len(entries)} entries; at most {MAX_NETWORK_ENTRIES}")
        body[name] = list(entries)
    if body.get("allow") and egress != "allow":
        raise ValueError('allow is used only with egress "allow"')
    return body


def _network_body(network: Any) -> Dict[str, Any]:
    """A policy given as ``"allow"``-style mode or as a dict with ``egress``, ``allow``, ``deny``."""
    if isinstance(network, str):
        return network_policy(network)
    if isinstance(network, Mapping):
        unknown = set(network) - {"egress", "allow", "deny"}
        if unknown:
            raise ValueError(f"unknown network policy keys: {sorted(unknown)}")
        return network_policy(
            str(network.get("egress", "none")), network.get("allow"), network.get("deny")
        )
    raise ValueError(f"network must be a dict or an egress mode, got {network!r}")


class SessionStatus(str, Enum):
    """Where a session is in its lifecycle."""

    CREATING = "CREATING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    DELETING = "DELETING"


@dataclass(frozen=True)
class Resources:
    """The resource limits a session was granted."""

    cpus: float
    memory_mb: int
    pids: int
    disk_mb: Optional[int] = None
    """Disk quota of the session's writable layer in MiB, when one was asked for."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Resources":
        """Parses the wire form (``{"cpus", "memoryMb", "pids", "diskMb"}``)."""
        disk = data.get("diskMb")
        return cls(
            cpus=float(data.get("cpus", 0)),
            memory_mb=int(data.get("memoryMb", 0)),
            pids=int(data.get("pids", 0)),
            disk_mb=int(disk) if disk is not None else None,
        )


def parse_time(value: str) -> datetime:
    """Parses an RFC 3339 timestamp into an aware ``datetime``."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python < 3.11 accepts at most 6 fractional digits.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        text = f"{head}.{(digits + '000000')[:6]}{rest[i:]}"
    return datetime.fromisoformat(text)


def check_session_id(session_id: str) -> str:
    """Checks that ``session_id`` is a UUID; returns it in canonical form."""
    try:
        return str(uuid.UUID(str(session_id)))
    except ValueError:
        raise ValueError(f"session_id must be a UUID, got {session_id!r}") from None


C = TypeVar("C")


class _Handle(Generic[C]):
    """One session of one client: what both faces' handles are made of."""

    def __init__(self, client: C, session_id: str) -> None:
        self._client = client
        self.session_id = check_session_id(session_id)

    @property
    def client(self) -> C:
        """The client this handle talks through."""
        return self._client

    @property
    def path(self) -> str:
        """``/sessions/{id}``: the prefix of this session's routes."""
        return f"/sessions/{self.session_id}"


class SessionHandle(_Handle["SessionsClient"]):
    """What can be done inside one session: commands, code, files, interpreters, storage sync.

    Get one from :meth:`SessionsClient.session` (no request) or use a :class:`Session` returned
    by the client, which has the same attributes.
    """

    @property
    def commands(self) -> "Commands":
        """Shell commands and background processes."""
        from .commands import Commands

        return Commands(self._client.transport, self.path)

    @property
    def code(self) -> "Code":
        """Stateless code runs (a fresh process each time)."""
        from .code import Code

        return Code(self._client.transport, self.path)

    @property
    def files(self) -> "Files":
        """The session's filesystem."""
        from .files import Files

        return Files(self._client.transport, self.path)

    @property
    def ports(self) -> "Ports":
        """Ports listening inside the session, reached from outside, and preview links."""
        from .ports import Ports

        return Ports(self._client.transport, self.path)

    @property
    def context(self) -> "ContextManager":
        """Storage-context synchronisation for this session (``info``, ``sync``)."""
        from .storage import ContextManager

        return ContextManager(self._client.transport, self.session_id)

    def code_interpreter(self) -> "CodeInterpreter":
        """The stateful, multi-context code interpreter of this session."""
        from .interpreter import CodeInterpreter

        return CodeInterpreter(self._client.transport, self.path)

    def pty(
        self, cols: Optional[int] = None, rows: Optional[int] = None, command: Optional[str] = None
    ) -> "Terminal":
        """Opens a terminal (``cols``/``rows`` 1 to 1000, default 80×24) running ``command``
        or a login shell; close it (or use ``with``) to hang up."""
        from ._ws import ws_open
        from .pty import Terminal, pty_path

        return Terminal(ws_open(self._client.transport, pty_path(self.path, cols, rows, command)))

    def snapshot(self, name: str) -> "Image":
        """Turns the session's files (its writable layer over its image) into the image
        ``name``, owned by the caller's tenant and usable as ``image`` by later sessions. The
        session keeps running; its processes are frozen while the files are copied."""
        return self._client.transport.call(_snapshot_call(self.path, name))

    def fork(self, count: int = 1, ttl: Optional[int] = None) -> List["Session"]:
        """Creates ``count`` (1 to 20) new sessions from a snapshot of this session's files (not
        its processes), with its resources, environment and metadata, all at once; ``ttl`` in
        seconds, the server's default otherwise. Either all are created or none."""
        data = self._client.transport.call(_fork_call(self.path, count, ttl))
        return [Session.from_json(s, self._client) for s in data]

    def refresh(self) -> "Session":
        """Fetches the session's current state."""
        return self._client.get_session(self.session_id)

    def delete(self) -> "Session":
        """Deletes the session."""
        return self._client.delete_session(self.session_id)

    def pause(self) -> "Session":
        """Freezes every process of the session with its state; returns it ``PAUSED``."""
        return self._client.pause_session(self.session_id)

    def resume(self) -> "Session":
        """Thaws a paused session where it stopped; returns it ``RUNNING``."""
        return self._client.resume_session(self.session_id)

    def stats(self) -> "SessionStats":
        """What the session's processes use now (memory, CPU time, tasks)."""
        return self._client.session_stats(self.session_id)

    def update_network(
        self, egress: str, allow: Optional[List[str]] = None, deny: Optional[List[str]] = None
    ) -> "Session":
        """Replaces the session's network policy; new connections follow it.

        Only a session created with network can change it (``"none"`` included).
        """
        return self._client.update_session(
            self.session_id, network=network_policy(egress, allow, deny)
        )


@dataclass
class SessionInfo:
    """A session as the API shows it (what :class:`Session` and :class:`AsyncSession` hold)."""

    session_id: str
    status: SessionStatus
    image: str
    created_at: datetime
    expires_at: datetime
    metadata: Dict[str, str] = field(default_factory=dict)
    resources: Optional[Resources] = None
    network: Dict[str, Any] = field(default_factory=lambda: {"egress": "none", "allow": [], "deny": []})
    """The session's network policy: ``egress``, ``allow`` and ``deny``, as last set."""
    auto_pause: Optional[Dict[str, Any]] = None
    """When the session pauses itself (``idleSeconds``, ``keepAwake``); ``None``: never."""
    paused_at: Optional[datetime] = None
    """When a ``PAUSED`` session was paused."""

    @staticmethod
    def fields_from_json(data: Mapping[str, Any]) -> Dict[str, Any]:
        """The fields of the wire form, parsed."""
        status_text = str(data.get("status", "RUNNING"))
        try:
            status = SessionStatus(status_text)
        except ValueError:
            status = SessionStatus.RUNNING
        resources = data.get("resources")
        network: Mapping[str, Any] = data.get("network") or {}
        if not isinstance(network, Mapping):
            network = {}
        return dict(
            session_id=str(data["sessionId"]),
            status=status,
            image=str(data.get("image", "default")),
            created_at=parse_time(str(data["createdAt"])),
            expires_at=parse_time(str(data["expiresAt"])),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            resources=Resources.from_json(resources) if isinstance(resources, Mapping) else None,
            network={
                "egress": str(network.get("egress", "none")),
                "allow": [str(e) for e in network.get("allow") or []],
                "deny": [str(e) for e in network.get("deny") or []],
            },
            auto_pause=dict(data["autoPause"]) if isinstance(data.get("autoPause"), Mapping) else None,
            paused_at=parse_time(str(data["pausedAt"])) if data.get("pausedAt") else None,
        )

    def is_expired(self) -> bool:
        """Whether the session's time to live has passed."""
        return datetime.now(self.expires_at.tzinfo) >= self.expires_at


@dataclass
class Session(SessionInfo):
    """A session as the API shows it; also a handle for working inside it."""

    _client: Optional["SessionsClient"] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], client: Optional["SessionsClient"] = None) -> "Session":
        """Parses the wire form."""
        return cls(**cls.fields_from_json(data), _client=client)

    @property
    def handle(self) -> SessionHandle:
        """A handle for this session's in-session APIs."""
        if self._client is None:
            raise RuntimeError("this Session was not returned by a SessionsClient")
        return SessionHandle(self._client, self.session_id)

    @property
    def commands(self) -> "Commands":
        """Shell commands and background processes."""
        return self.handle.commands

    @property
    def code(self) -> "Code":
        """Stateless code runs."""
        return self.handle.code

    @property
    def files(self) -> "Files":
        """The session's filesystem."""
        return self.handle.files

    @property
    def ports(self) -> "Ports":
        """Ports listening inside the session, reached from outside, and preview links."""
        return self.handle.ports

    @property
    def context(self) -> "ContextManager":
        """Storage-context synchronisation for this session."""
        return self.handle.context

    def code_interpreter(self) -> "CodeInterpreter":
        """The stateful, multi-context code interpreter of this session."""
        return self.handle.code_interpreter()

    def update_network(
        self, egress: str, allow: Optional[List[str]] = None, deny: Optional[List[str]] = None
    ) -> "Session":
        """Replaces the session's network policy (see :func:`network_policy`)."""
        return self.handle.update_network(egress, allow, deny)

    def snapshot(self, name: str) -> "Image":
        """Turns the session's files into the image ``name`` (see :meth:`SessionHandle.snapshot`)."""
        return self.handle.snapshot(name)

    def fork(self, count: int = 1, ttl: Optional[int] = None) -> List["Session"]:
        """New sessions from a snapshot of this session's files (see :meth:`SessionHandle.fork`)."""
        return self.handle.fork(count, ttl)

    def pty(
        self, cols: Optional[int] = None, rows: Optional[int] = None, command: Optional[str] = None
    ) -> "Terminal":
        """Opens a terminal (see :meth:`SessionHandle.pty`)."""
        return self.handle.pty(cols, rows, command)

    def refresh(self) -> "Session":
        """Fetches the session's current state (see :meth:`SessionHandle.refresh`)."""
        return self.handle.refresh()

    def delete(self) -> "Session":
        """Deletes the session (see :meth:`SessionHandle.delete`)."""
        return self.handle.delete()

    def pause(self) -> "Session":
        """Freezes the session (see :meth:`SessionHandle.pause`)."""
        return self.handle.pause()

    def resume(self) -> "Session":
        """Thaws the session (see :meth:`SessionHandle.resume`)."""
        return self.handle.resume()

    def stats(self) -> "SessionStats":
        """What the session's processes use now (see :meth:`SessionHandle.stats`)."""
        return self.handle.stats()


@dataclass(frozen=True)
class SessionStats:
    """What a session's processes use now, from its cgroup."""

    memory_bytes: int
    """Memory charged to the session in all (processes, page cache, kernel)."""
    rss_bytes: int
    """Anonymous memory of its processes."""
    cache_bytes: int
    """Page cache charged to it."""
    cpu_seconds: float
    """CPU time used since it started."""
    pids: int
    """Processes and threads alive in it."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SessionStats":
        """Parses the wire form."""
        return cls(
            memory_bytes=int(data.get("memoryBytes", 0)),
            rss_bytes=int(data.get("rssBytes", 0)),
            cache_bytes=int(data.get("cacheBytes", 0)),
            cpu_seconds=float(data.get("cpuSeconds", 0.0)),
            pids=int(data.get("pids", 0)),
        )


@dataclass
class SessionList:
    """One page of sessions."""

    sessions: List[Session]
    total: int
    limit: int
    offset: int

    def __iter__(self) -> Any:
        return iter(self.sessions)

    def __len__(self) -> int:
        return len(self.sessions)


def _snapshot_call(session_path: str, name: str) -> Call["Image"]:
    from .images import Image

    return Call("POST", f"{session_path}/snapshot", json_body={"name": name}, parse=Image.from_json)


def _fork_call(session_path: str, count: int, ttl: Optional[int]) -> Call[List[Dict[str, Any]]]:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 20:
        raise ValueError(f"count must be between 1 and 20, got {count!r}")
    body: Dict[str, Any] = {"count": count}
    if ttl is not None:
        body["ttl"] = _check_ttl(ttl)
    return Call(
        "POST",
        f"{session_path}/fork",
        json_body=body,
        parse=lambda data: list((data or {}).get("sessions", [])),
    )


def _check_ttl(ttl: Any) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise ValueError(f"ttl must be an integer number of seconds, got {ttl!r}")
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise ValueError(f"ttl must be between {MIN_TTL} and {MAX_TTL} seconds, got {ttl}")
    return ttl


def _create_body(
    ttl: Optional[int],
    image: Optional[str],
    metadata: Optional[Mapping[str, str]],
    resources: Optional[Mapping[str, Any]],
    env: Optional[Mapping[str, str]],
    context_syncs: Optional[List[Mapping[str, Any]]],
    network: Optional[Any],
    auto_pause: Optional[int] = None,
    keep_awake: bool = False,
) -> Dict[str, Any]:
    body: Dict[str, Any] = {}
    if ttl is not None:
        body["ttl"] = _check_ttl(ttl)
    if image is not None:
        if not isinstance(image, str) or not image:
            raise ValueError("image must be a non-empty string")
        body["image"] = image
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise ValueError("metadata must be a dict of strings")
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(
                    f"metadata keys and values must be strings, got {key!r}: {value!r}"
                )
        body["metadata"] = dict(metadata)
    if resources is not None:
        names = {"memory_mb": "memoryMb", "disk_mb": "diskMb"}
        body["resources"] = {names.get(k, k): v for k, v in resources.items()}
    if env is not None:
        body["env"] = dict(env)
    if context_syncs is not None:
        body["contextSyncs"] = [_camel_keys(s) for s in context_syncs]
    if network is not None:
        body["network"] = _network_body(network)
    if auto_pause is not None:
        if isinstance(auto_pause, bool) or not isinstance(auto_pause, int):
            raise ValueError(f"auto_pause must be an integer number of seconds, got {auto_pause!r}")
        if not MIN_AUTO_PAUSE <= auto_pause <= MAX_TTL:
            raise ValueError(
                f"auto_pause must be between {MIN_AUTO_PAUSE} and {MAX_TTL} seconds, got {auto_pause}"
            )
        body["autoPause"] = {"idleSeconds": auto_pause, "keepAwake": bool(keep_awake)}
    elif keep_awake:
        raise ValueError("keep_awake is used only with auto_pause")
    return body


def _page_params(limit: Any, offset: Any) -> Dict[str, int]:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be 0 or more, got {offset!r}")
    return {"limit": limit, "offset": offset}


def _update_body(
    ttl: Optional[int], metadata: Optional[Mapping[str, str]], network: Optional[Any]
) -> Dict[str, Any]:
    body: Dict[str, Any] = {}
    if ttl is not None:
        body["ttl"] = _check_ttl(ttl)
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if network is not None:
        body["network"] = _network_body(network)
    return body


def _credentials(api_url: Optional[str], bearer_token: Optional[str]) -> "tuple[str, str]":
    url = api_url or os.environ.get("HUTCH_URL") or os.environ.get("SANDBOX_API_URL")
    token = bearer_token or os.environ.get("HUTCH_TOKEN") or os.environ.get("SANDBOX_API_TOKEN")
    if not url:
        raise ValueError("api_url is required (or set HUTCH_URL)")
    if not token:
        raise ValueError("bearer_token is required (or set HUTCH_TOKEN)")
    return url, token


S = TypeVar("S")


class _SessionCalls(Generic[S]):
    """The requests of the sessions API, shared by both clients. ``_bind`` turns a session's
    wire form into the client's own kind of session."""

    timeout: float

    def _bind(self, data: Mapping[str, Any]) -> S:
        raise NotImplementedError

    def _page(self, limit: int, offset: int) -> Callable[[Any], Dict[str, Any]]:
        def parse(data: Any) -> Dict[str, Any]:
            return dict(
                sessions=[self._bind(s) for s in data.get("sessions", [])],
                total=int(data.get("total", 0)),
                limit=int(data.get("limit", limit)),
                offset=int(data.get("offset", offset)),
            )

        return parse

    def _create_call(self, body: Dict[str, Any]) -> Call[S]:
        return Call(
            "POST", "/sessions", json_body=body, timeout=max(self.timeout, 120.0), parse=self._bind
        )

    def _list_call(
        self, limit: int, offset: int, status: Optional[SessionStatus] = None
    ) -> Call[Dict[str, Any]]:
        params: Dict[str, Any] = dict(_page_params(limit, offset))
        if status is not None:
            params["status"] = SessionStatus(status).value
        return Call("GET", "/sessions", params=params, parse=self._page(limit, offset))

    def _stats_call(self, session_id: str) -> Call[SessionStats]:
        sid = check_session_id(session_id)
        return Call("GET", f"/sessions/{sid}/stats", parse=SessionStats.from_json)

    def _get_call(self, session_id: str) -> Call[S]:
        return Call("GET", f"/sessions/{check_session_id(session_id)}", parse=self._bind)

    def _update_call(self, session_id: str, body: Dict[str, Any]) -> Call[S]:
        sid = check_session_id(session_id)
        return Call("PATCH", f"/sessions/{sid}", json_body=body, parse=self._bind)

    def _delete_call(self, session_id: str) -> Call[S]:
        sid = check_session_id(session_id)
        return Call("DELETE", f"/sessions/{sid}", timeout=max(self.timeout, 60.0), parse=self._bind)

    def _verb_call(self, session_id: str, verb: str) -> Call[S]:
        return Call("POST", f"/sessions/{check_session_id(session_id)}/{verb}", parse=self._bind)

    def _openapi_call(self) -> Call[Dict[str, Any]]:
        return Call("GET", "/openapi.json", parse=lambda d: d if isinstance(d, dict) else {})


def _health(response: Any) -> Dict[str, Any]:
    from .errors import error_from_response

    if response.status_code >= 400:
        raise error_from_response(response.status_code, response.headers, response.text)
    try:
        data = response.json()
    except ValueError:
        return {"status": response.text.strip()}
    return data if isinstance(data, dict) else {"status": data}


def _unreachable(transport: _Base, e: Exception) -> Exception:
    from .errors import SandboxConnectionError

    return SandboxConnectionError(f"cannot reach {transport.root_url}: {e}")


class SessionsClient(_SessionCalls[Session]):
    """Client of the hutch REST API.

    ``api_url`` is the server's address, with or without ``/v1``
    (``http://127.0.0.1:7420/v1``); ``bearer_token`` a token from ``hutch token``. Both default
    to ``HUTCH_URL``/``HUTCH_TOKEN`` (or ``SANDBOX_API_URL``/``SANDBOX_API_TOKEN``).
    Use it as a context manager to close its connections::

        with SessionsClient(api_url, bearer_token=token) as client:
            session = client.create_session(ttl=600)
            print(session.commands.run("uname -a").stdout)
            client.delete_session(session.session_id)
    """

    def __init__(
        self,
        api_url: Optional[str] = None,
        bearer_token: Optional[str] = None,
        timeout: float = 30.0,
        verify_ssl: bool = True,
    ) -> None:
        url, token = _credentials(api_url, bearer_token)
        self.transport = Transport(url, token, timeout=timeout, verify_ssl=verify_ssl)
        self.api_url = self.transport.api_url
        self.timeout = timeout
        self.verify_ssl = verify_ssl

    def _bind(self, data: Mapping[str, Any]) -> Session:
        return Session.from_json(data, self)

    # -- lifecycle of the client ------------------------------------------------------------

    def close(self) -> None:
        """Closes the client's connections."""
        self.transport.close()

    def __enter__(self) -> "SessionsClient":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    # -- sessions ---------------------------------------------------------------------------

    def create_session(
        self,
        ttl: Optional[int] = None,
        image: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        *,
        resources: Optional[Mapping[str, Any]] = None,
        env: Optional[Mapping[str, str]] = None,
        context_syncs: Optional[List[Mapping[str, Any]]] = None,
        network: Optional[Any] = None,
        auto_pause: Optional[int] = None,
        keep_awake: bool = False,
    ) -> Session:
        """Creates a session (``POST /sessions``) and returns it once it runs.

        ``ttl`` is in seconds, 60 to 28800 (default 300 on the server); ``image`` names the
        image (default ``default``); ``metadata`` is a dict of string labels. ``resources`` may
        hold ``cpus``, ``memoryMb``/``memory_mb``, ``pids`` and ``diskMb``/``disk_mb``; ``env``
        variables every process starts with; ``context_syncs`` binds storage contexts to paths
        (``[{"contextId": …, "path": "/workspace/data"}]``); ``network`` is the egress policy,
        ``{"egress": "allow", "allow": ["pypi.org"], "deny": []}`` or just ``"all"`` (default:
        the server's, out of the box ``"none"``: only loopback). ``auto_pause`` pauses the
        session once idle that many seconds (10 to 28800; no request and nothing running,
        background processes too with ``keep_awake``); the next request resumes it first, so
        the pause is never seen (default: the server's, out of the box never).

        Raises ``ValueError`` for a bad argument before any request.
        """
        body = _create_body(
            ttl, image, metadata, resources, env, context_syncs, network, auto_pause, keep_awake
        )
        return self.transport.call(self._create_call(body))

    def list_sessions(
        self, limit: int = 20, offset: int = 0, status: Optional[SessionStatus] = None
    ) -> SessionList:
        """Lists the caller's sessions, oldest first (``GET /sessions``).

        ``limit`` is 1 to 100, ``offset`` at least 0; ``status`` keeps the sessions in that
        state only. The result iterates over its sessions and has ``sessions``, ``total``,
        ``limit`` and ``offset``.
        """
        return SessionList(**self.transport.call(self._list_call(limit, offset, status)))

    def get_session(self, session_id: str) -> Session:
        """Fetches one session (``GET /sessions/{id}``)."""
        return self.transport.call(self._get_call(session_id))

    def update_session(
        self,
        session_id: str,
        ttl: Optional[int] = None,
        metadata: Optional[Mapping[str, str]] = None,
        network: Optional[Any] = None,
    ) -> Session:
        """Changes a session's TTL (counted from now), replaces its metadata, or its network
        policy (which applies to new connections)."""
        return self.transport.call(
            self._update_call(session_id, _update_body(ttl, metadata, network))
        )

    def delete_session(self, session_id: str) -> Session:
        """Deletes a session and everything running in it (``DELETE /sessions/{id}``).

        Returns the session as it was last seen.
        """
        return self.transport.call(self._delete_call(session_id))

    def pause_session(self, session_id: str) -> Session:
        """Freezes a session's processes (``POST /sessions/{id}/pause``)."""
        return self.transport.call(self._verb_call(session_id, "pause"))

    def resume_session(self, session_id: str) -> Session:
        """Thaws a paused session (``POST /sessions/{id}/resume``)."""
        return self.transport.call(self._verb_call(session_id, "resume"))

    def session_stats(self, session_id: str) -> SessionStats:
        """What a session's processes use now (``GET /sessions/{id}/stats``)."""
        return self.transport.call(self._stats_call(session_id))

    def session(self, session_id: str) -> SessionHandle:
        """A handle on an existing session, without a request."""
        return SessionHandle(self, session_id)

    # -- storage contexts -------------------------------------------------------------------

    @property
    def contexts(self) -> "StorageContexts":
        """Persistent storage contexts of the caller (``/contexts``)."""
        from .storage import StorageContexts

        return StorageContexts(self.transport)

    @property
    def images(self) -> "Images":
        """Images: pull, import, list, get, delete (``/images``)."""
        from .images import Images

        return Images(self.transport)

    # -- service ----------------------------------------------------------------------------

    def health(self) -> Dict[str, Any]:
        """``GET /health`` (no token needed): the server's status."""
        import httpx

        try:
            response = httpx.get(
                f"{self.transport.root_url}/health", timeout=self.timeout, verify=self.verify_ssl
            )
        except httpx.TransportError as e:
            raise _unreachable(self.transport, e) from e
        return _health(response)

    def openapi(self) -> Dict[str, Any]:
        """The server's OpenAPI document (``GET /v1/openapi.json``)."""
        return self.transport.call(self._openapi_call())


class AsyncSessionHandle(_Handle["AsyncSessionsClient"]):
    """:class:`SessionHandle` for event loops: the same attributes, whose calls are awaited."""

    @property
    def commands(self) -> "AsyncCommands":
        """Shell commands and background processes."""
        from .commands import AsyncCommands

        return AsyncCommands(self._client.transport, self.path)

    @property
    def code(self) -> "AsyncCode":
        """Stateless code runs (a fresh process each time)."""
        from .code import AsyncCode

        return AsyncCode(self._client.transport, self.path)

    @property
    def files(self) -> "AsyncFiles":
        """The session's filesystem."""
        from .files import AsyncFiles

        return AsyncFiles(self._client.transport, self.path)

    @property
    def ports(self) -> "AsyncPorts":
        """Ports listening inside the session, reached from outside, and preview links."""
        from .ports import AsyncPorts

        return AsyncPorts(self._client.transport, self.path)

    @property
    def context(self) -> "AsyncContextManager":
        """Storage-context synchronisation for this session (``info``, ``sync``)."""
        from .storage import AsyncContextManager

        return AsyncContextManager(self._client.transport, self.session_id)

    def code_interpreter(self) -> "AsyncCodeInterpreter":
        """The stateful, multi-context code interpreter of this session."""
        from .interpreter import AsyncCodeInterpreter

        return AsyncCodeInterpreter(self._client.transport, self.path)

    async def pty(
        self, cols: Optional[int] = None, rows: Optional[int] = None, command: Optional[str] = None
    ) -> "AsyncTerminal":
        """Opens a terminal; see :meth:`SessionHandle.pty`."""
        from ._ws import ws_open_async
        from .pty import AsyncTerminal, pty_path

        path = pty_path(self.path, cols, rows, command)
        return AsyncTerminal(await ws_open_async(self._client.transport, path))

    async def snapshot(self, name: str) -> "Image":
        """Turns the session's files into the image ``name``; see :meth:`SessionHandle.snapshot`."""
        return await self._client.transport.call(_snapshot_call(self.path, name))

    async def fork(self, count: int = 1, ttl: Optional[int] = None) -> List["AsyncSession"]:
        """New sessions from a snapshot of this session's files; see :meth:`SessionHandle.fork`."""
        data = await self._client.transport.call(_fork_call(self.path, count, ttl))
        return [AsyncSession.from_json(s, self._client) for s in data]

    async def refresh(self) -> "AsyncSession":
        """Fetches the session's current state."""
        return await self._client.get_session(self.session_id)

    async def delete(self) -> "AsyncSession":
        """Deletes the session."""
        return await self._client.delete_session(self.session_id)

    async def pause(self) -> "AsyncSession":
        """Freezes the session; see :meth:`SessionHandle.pause`."""
        return await self._client.pause_session(self.session_id)

    async def resume(self) -> "AsyncSession":
        """Thaws the session; see :meth:`SessionHandle.resume`."""
        return await self._client.resume_session(self.session_id)

    async def stats(self) -> SessionStats:
        """What the session's processes use now; see :meth:`SessionHandle.stats`."""
        return await self._client.session_stats(self.session_id)

    async def update_network(
        self, egress: str, allow: Optional[List[str]] = None, deny: Optional[List[str]] = None
    ) -> "AsyncSession":
        """Replaces the session's network policy; new connections follow it."""
        return await self._client.update_session(
            self.session_id, network=network_policy(egress, allow, deny)
        )


@dataclass
class AsyncSession(SessionInfo, AsyncSessionHandle):
    """A session of the async client: what the API shows, and a handle for working inside
    it (``await session.commands.run(…)``)."""

    _client: "AsyncSessionsClient" = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    @classmethod
    def from_json(cls, data: Mapping[str, Any], client: "AsyncSessionsClient") -> "AsyncSession":
        """Parses the wire form."""
        return cls(**cls.fields_from_json(data), _client=client)

    @property
    def handle(self) -> AsyncSessionHandle:
        """A handle for this session's in-session APIs."""
        return AsyncSessionHandle(self._client, self.session_id)


@dataclass
class AsyncSessionList:
    """One page of sessions of the async client."""

    sessions: List[AsyncSession]
    total: int
    limit: int
    offset: int

    def __iter__(self) -> Any:
        return iter(self.sessions)

    def __len__(self) -> int:
        return len(self.sessions)


class AsyncSessionsClient(_SessionCalls["AsyncSession"]):
    """:class:`SessionsClient` for event loops: the same methods, awaited, over one pool of
    keep-alive connections, so many calls can run at once from one loop::

        async with AsyncSessionsClient(api_url, bearer_token=token) as client:
            session = await client.create_session(ttl=600)
            print((await session.commands.run("uname -a")).stdout)
            await client.delete_session(session.session_id)

    ``max_connections`` bounds the connections it keeps open to the server at once.
    """

    def __init__(
        self,
        api_url: Optional[str] = None,
        bearer_token: Optional[str] = None,
        timeout: float = 30.0,
        verify_ssl: bool = True,
        max_connections: int = 200,
    ) -> None:
        url, token = _credentials(api_url, bearer_token)
        self.transport = AsyncTransport(
            url, token, timeout=timeout, verify_ssl=verify_ssl, max_connections=max_connections
        )
        self.api_url = self.transport.api_url
        self.timeout = timeout
        self.verify_ssl = verify_ssl

    def _bind(self, data: Mapping[str, Any]) -> AsyncSession:
        return AsyncSession.from_json(data, self)

    async def close(self) -> None:
        """Closes the client's connections."""
        await self.transport.close()

    async def __aenter__(self) -> "AsyncSessionsClient":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    async def create_session(
        self,
        ttl: Optional[int] = None,
        image: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        *,
        resources: Optional[Mapping[str, Any]] = None,
        env: Optional[Mapping[str, str]] = None,
        context_syncs: Optional[List[Mapping[str, Any]]] = None,
        network: Optional[Any] = None,
        auto_pause: Optional[int] = None,
        keep_awake: bool = False,
    ) -> AsyncSession:
        """Creates a session; see :meth:`SessionsClient.create_session`."""
        body = _create_body(
            ttl, image, metadata, resources, env, context_syncs, network, auto_pause, keep_awake
        )
        return await self.transport.call(self._create_call(body))

    async def list_sessions(
        self, limit: int = 20, offset: int = 0, status: Optional[SessionStatus] = None
    ) -> AsyncSessionList:
        """Lists the caller's sessions, oldest first; ``status`` keeps those in that state."""
        return AsyncSessionList(
            **await self.transport.call(self._list_call(limit, offset, status))
        )

    async def get_session(self, session_id: str) -> AsyncSession:
        """Fetches one session."""
        return await self.transport.call(self._get_call(session_id))

    async def update_session(
        self,
        session_id: str,
        ttl: Optional[int] = None,
        metadata: Optional[Mapping[str, str]] = None,
        network: Optional[Any] = None,
    ) -> AsyncSession:
        """Changes a session's TTL, metadata or network policy."""
        return await self.transport.call(
            self._update_call(session_id, _update_body(ttl, metadata, network))
        )

    async def delete_session(self, session_id: str) -> AsyncSession:
        """Deletes a session and everything running in it; returns it as last seen."""
        return await self.transport.call(self._delete_call(session_id))

    async def pause_session(self, session_id: str) -> AsyncSession:
        """Freezes a session's processes."""
        return await self.transport.call(self._verb_call(session_id, "pause"))

    async def resume_session(self, session_id: str) -> AsyncSession:
        """Thaws a paused session."""
        return await self.transport.call(self._verb_call(session_id, "resume"))

    async def session_stats(self, session_id: str) -> SessionStats:
        """What a session's processes use now."""
        return await self.transport.call(self._stats_call(session_id))

    def session(self, session_id: str) -> AsyncSessionHandle:
        """A handle on an existing session, without a request."""
        return AsyncSessionHandle(self, session_id)

    @property
    def contexts(self) -> "AsyncStorageContexts":
        """Persistent storage contexts of the caller (``/contexts``)."""
        from .storage import AsyncStorageContexts

        return AsyncStorageContexts(self.transport)

    @property
    def images(self) -> "AsyncImages":
        """Images: pull, import, list, get, delete (``/images``)."""
        from .images import AsyncImages

        return AsyncImages(self.transport)

    async def health(self) -> Dict[str, Any]:
        """``GET /health`` (no token needed): the server's status."""
        import httpx

        try:
            async with httpx.AsyncClient(timeout=self.timeout, verify=self.verify_ssl) as plain:
                response = await plain.get(f"{self.transport.root_url}/health")
        except httpx.TransportError as e:
            raise _unreachable(self.transport, e) from e
        return _health(response)

    async def openapi(self) -> Dict[str, Any]:
        """The server's OpenAPI document (``GET /v1/openapi.json``)."""
        return await self.transport.call(self._openapi_call())


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _camel_keys(data: Mapping[str, Any]) -> Dict[str, Any]:
    return {_camel(k): v for k, v in data.items()}
