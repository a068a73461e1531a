"""Images: OCI images pulled from registries or imported, shared by every tenant, and
snapshots of sessions, owned by one.

``client.images`` (or ``AsyncImages`` on the async client) pulls (with progress), imports, lists, shows and deletes them
(``/v1/images``); ``session.snapshot(name)`` turns a running session's files into an image and
``session.fork(count)`` makes new sessions from such a snapshot::

    client.images.pull("python:3.11", on_progress=lambda p: print(p.layer, p.done, p.total))
    session = client.create_session(image="python:3.11")
    session.commands.run("pip install requests")
    snapshot = session.snapshot("with-requests")
    other = client.create_session(image="with-requests")

Image names hold ``/`` and ``:``; the SDK sends them percent-encoded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, AsyncIterator, Callable, Iterator, List, Mapping, Optional, Union
from urllib.parse import quote

from ._http import AsyncTransport, Call, Transport
from .errors import SandboxConnectionError, error_from_frame
from .sessions import parse_time

__all__ = [
    "Image",
    "ImageDetail",
    "ImageLayer",
    "ImageConfig",
    "PullProgress",
    "Images",
    "AsyncImages",
]

#: Bytes of an archive sent at a time by :meth:`Images.import_`.
UPLOAD_CHUNK = 256 * 1024


@dataclass
class Image:
    """An image as the API lists it."""

    name: str
    """The name to pass as ``image``: a canonical reference, or a snapshot's short name."""
    digest: str
    size_bytes: int
    layers: int
    sessions: int
    """Holds on it now: sessions using it, and ready sandboxes the warm pool keeps for it."""
    snapshot: bool = False
    tenant: Optional[str] = None
    """The owning tenant, for snapshots."""
    manifest_digest: Optional[str] = None
    created: Optional[str] = None
    stored_at: Optional[datetime] = None
    last_used: Optional[datetime] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Image":
        """Parses the wire form."""
        stored = data.get("storedAt")
        used = data.get("lastUsed")
        return cls(
            name=str(data["name"]),
            digest=str(data.get("digest", "")),
            size_bytes=int(data.get("sizeBytes", 0) or 0),
            layers=int(data.get("layers", 0) or 0),
            sessions=int(data.get("sessions", 0) or 0),
            snapshot=bool(data.get("snapshot", False)),
            tenant=data.get("tenant"),
            manifest_digest=data.get("manifestDigest"),
            created=data.get("created"),
            stored_at=parse_time(stored) if isinstance(stored, str) else None,
            last_used=parse_time(used) if isinstance(used, str) else None,
        )


@dataclass
class ImageLayer:
    """One layer of an image, bottom first."""

    diff_id: str
    blob: str
    blob_size: int


@dataclass
class ImageConfig:
    """An image's run settings: ``env``, ``working_dir`` and ``user`` apply to its sessions;
    ``entrypoint`` and ``cmd`` are shown only."""

    env: List[str] = field(default_factory=list)
    working_dir: Optional[str] = None
    user: Optional[str] = None
    entrypoint: Optional[List[str]] = None
    cmd: Optional[List[str]] = None


@dataclass
class ImageDetail(Image):
    """An image with its layers and run settings (``client.images.get``)."""

    layer_digests: List[ImageLayer] = field(default_factory=list)
    config: ImageConfig = field(default_factory=ImageConfig)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ImageDetail":
        """Parses the wire form."""
        base = Image.from_json(data)
        config = data.get("config") or {}
        return cls(
            **base.__dict__,
            layer_digests=[
                ImageLayer(
                    diff_id=str(layer.get("diffId", "")),
                    blob=str(layer.get("blob", "")),
                    blob_size=int(layer.get("blobSize", 0) or 0),
                )
                for layer in data.get("layerDigests") or []
            ],
            config=ImageConfig(
                env=[str(e) for e in config.get("env") or []],
                working_dir=config.get("workingDir"),
                user=config.get("user"),
                entrypoint=config.get("entrypoint"),
                cmd=config.get("cmd"),
            ),
        )


@dataclass
class PullProgress:
    """Progress of one layer of a pull."""

    layer: str
    """The layer's blob digest."""
    status: str
    """``cached``, ``downloading``, ``unpacking`` or ``done``."""
    done: int
    """Bytes downloaded so far."""
    total: int
    """The blob's size."""


def _name_path(name: str) -> str:
    if not name:
        raise ValueError("an image name must not be empty")
    return "/images/" + quote(name, safe="")


ProgressCallback = Callable[[PullProgress], None]
Archive = Union[str, "os.PathLike[str]", IO[bytes]]


class PullReader:
    """Reads the NDJSON lines of a pull: progress to the callback, the image at the end."""

    def __init__(self, reference: str, on_progress: Optional[ProgressCallback]) -> None:
        self.reference = reference
        self.on_progress = on_progress

    def feed(self, line: str) -> Optional[Image]:
        """Takes one line; returns the image once the pull is done, raises if it failed."""
        if not line.strip():
            return None
        event = json.loads(line)
        kind = event.get("type")
        if kind == "progress":
            if self.on_progress is not None:
                self.on_progress(
                    PullProgress(
                        layer=str(event.get("layer", "")),
                        status=str(event.get("status", "")),
                        done=int(event.get("done", 0) or 0),
                        total=int(event.get("total", 0) or 0),
                    )
                )
        elif kind == "image":
            return Image.from_json(event["image"])
        elif kind == "error":
            raise error_from_frame(event.get("error") or {})
        return None

    def ended(self) -> SandboxConnectionError:
        """The error for a pull whose stream ended before its result."""
        return SandboxConnectionError(f"the pull of {self.reference} ended before its result")


def _images(data: Any) -> List[Image]:
    return [Image.from_json(i) for i in (data or {}).get("images", [])]


class _ImageCalls:
    """The requests of the images API, shared by both faces."""

    def _list_call(self) -> Call[List[Image]]:
        return Call("GET", "/images", parse=_images)

    def _get_call(self, name: str) -> Call[ImageDetail]:
        return Call("GET", _name_path(name), parse=ImageDetail.from_json)

    def _delete_call(self, name: str) -> Call[Image]:
        return Call("DELETE", _name_path(name), parse=Image.from_json)

    def _pull_call(self, reference: str, timeout: Optional[float]) -> Call[None]:
        return Call("POST", "/images/pull", json_body={"reference": reference}, timeout=timeout)

    def _import_call(
        self, content: Any, size: Optional[int], name: Optional[str], timeout: Optional[float]
    ) -> Call[List[Image]]:
        headers = {"Content-Type": "application/octet-stream"}
        if size is not None:
            headers["Content-Length"] = str(size)
        return Call(
            "POST",
            "/images/import",
            params={"name": name} if name is not None else None,
            content=content,
            headers=headers,
            timeout=timeout,
            parse=_images,
        )


def _open_archive(archive: Archive) -> "tuple[IO[bytes], bool, Optional[int]]":
    if isinstance(archive, (str, os.PathLike)):
        file = open(archive, "rb")
        return file, True, os.fstat(file.fileno()).st_size
    return archive, False, None


class Images(_ImageCalls):
    """The images the caller may use (``/images``)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def list(self) -> List[Image]:
        """Every pulled or imported image, and the caller's snapshots, by name."""
        return self._transport.call(self._list_call())

    def get(self, name: str) -> ImageDetail:
        """One image with its layers and run settings; a missing one raises a 404
        ``image_not_found``."""
        return self._transport.call(self._get_call(name))

    def delete(self, name: str) -> Image:
        """Deletes an image (409 ``conflict`` while a session uses it; a shared image needs an
        admin token unless the server lets tenants manage images)."""
        return self._transport.call(self._delete_call(name))

    def pull(
        self,
        reference: str,
        on_progress: Optional[ProgressCallback] = None,
        timeout: Optional[float] = 3600.0,
    ) -> Image:
        """Pulls ``reference`` into the server (only the layers it lacks), calling
        ``on_progress`` for each progress line, and returns the image. A failed pull raises
        the error a failed request would (``image_not_found``, ``image_pull_failed`` with the
        registry's answer in ``details["registryAnswer"]``, ``forbidden``)."""
        reader = PullReader(reference, on_progress)
        with self._transport.stream(self._pull_call(reference, timeout)) as response:
            for line in response.iter_lines():
                image = reader.feed(line)
                if image is not None:
                    return image
        raise reader.ended()

    def import_(
        self,
        archive: Archive,
        name: Optional[str] = None,
        timeout: Optional[float] = 3600.0,
    ) -> List[Image]:
        """Imports an OCI image layout tarball or a ``docker save`` archive (a path or a
        binary file object), streamed, and returns the images stored; ``name`` names the one
        image it holds. Needs an admin token unless the server lets tenants manage images."""
        file, close, size = _open_archive(archive)
        try:
            return self._transport.call(self._import_call(_chunks(file), size, name, timeout))
        finally:
            if close:
                file.close()


class AsyncImages(_ImageCalls):
    """:class:`Images` for event loops."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._transport = transport

    async def list(self) -> List[Image]:
        """Every pulled or imported image, and the caller's snapshots, by name."""
        return await self._transport.call(self._list_call())

    async def get(self, name: str) -> ImageDetail:
        """One image with its layers and run settings."""
        return await self._transport.call(self._get_call(name))

    async def delete(self, name: str) -> Image:
        """Deletes an image; see :meth:`Images.delete`."""
        return await self._transport.call(self._delete_call(name))

    async def pull(
        self,
        reference: str,
        on_progress: Optional[ProgressCallback] = None,
        timeout: Optional[float] = 3600.0,
    ) -> Image:
        """Pulls ``reference``; see :meth:`Images.pull`."""
        reader = PullReader(reference, on_progress)
        async with self._transport.stream(self._pull_call(reference, timeout)) as response:
            async for line in response.aiter_lines():
                image = reader.feed(line)
                if image is not None:
                    return image
        raise reader.ended()

    async def import_(
        self,
        archive: Archive,
        name: Optional[str] = None,
        timeout: Optional[float] = 3600.0,
    ) -> List[Image]:
        """Imports an image archive; see :meth:`Images.import_`."""
        file, close, size = _open_archive(archive)
        try:
            return await self._transport.call(
                self._import_call(_async_chunks(file), size, name, timeout)
            )
        finally:
            if close:
                file.close()


def _chunks(file: IO[bytes]) -> Iterator[bytes]:
    while True:
        chunk = file.read(UPLOAD_CHUNK)
        if not chunk:
            return
        yield chunk


async def _async_chunks(file: IO[bytes]) -> AsyncIterator[bytes]:
    for chunk in _chunks(file):
        yield chunk
