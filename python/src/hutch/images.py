"""Images: OCI images pulled from registries or imported, shared by every tenant, and
snapshots of sessions, owned by one.

``client.images`` pulls (with progress), imports, lists, shows and deletes them
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
from typing import IO, Any, Callable, Dict, Iterator, List, Mapping, Optional, Union
from urllib.parse import quote

from ._http import Transport
from .errors import SandboxConnectionError, error_from_response
from .sessions import parse_time

__all__ = [
    "Image",
    "ImageDetail",
    "ImageLayer",
    "ImageConfig",
    "PullProgress",
    "Images",
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


class Images:
    """The images the caller may use (``/images``)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def list(self) -> List[Image]:
        """Every pulled or imported image, and the caller's snapshots, by name."""
        data = self._transport.json("GET", "/images") or {}
        return [Image.from_json(i) for i in data.get("images", [])]

    def get(self, name: str) -> ImageDetail:
        """One image with its layers and run settings; a missing one raises a 404
        ``image_not_found``."""
        return ImageDetail.from_json(self._transport.json("GET", _name_path(name)))

    def delete(self, name: str) -> Image:
        """Deletes an image (409 ``conflict`` while a session uses it; a shared image needs an
        admin token unless the server lets tenants manage images)."""
        return Image.from_json(self._transport.json("DELETE", _name_path(name)))

    def pull(
        self,
        reference: str,
        on_progress: Optional[Callable[[PullProgress], None]] = None,
        timeout: Optional[float] = 3600.0,
    ) -> Image:
        """Pulls ``reference`` into the server (only the layers it lacks), calling
        ``on_progress`` for each progress line, and returns the image. A failed pull raises
        the error a failed request would (``image_not_found``, ``image_pull_failed`` with the
        registry's answer in ``details["registryAnswer"]``, ``forbidden``)."""
        with self._transport.stream(
            "POST", "/images/pull", json_body={"reference": reference}, timeout=timeout
        ) as response:
            for line in response.iter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind = event.get("type")
                if kind == "progress":
                    if on_progress is not None:
                        on_progress(
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
                    error = event.get("error") or {}
                    code = str(error.get("code", ""))
                    status = _status_of(code)
                    raise error_from_response(status, {}, json.dumps({"error": error}))
        raise SandboxConnectionError(f"the pull of {reference} ended before its result")

    def import_(
        self,
        archive: Union[str, "os.PathLike[str]", IO[bytes]],
        name: Optional[str] = None,
        timeout: Optional[float] = 3600.0,
    ) -> List[Image]:
        """Imports an OCI image layout tarball or a ``docker save`` archive (a path or a
        binary file object), streamed, and returns the images stored; ``name`` names the one
        image it holds. Needs an admin token unless the server lets tenants manage images."""
        params = {"name": name} if name is not None else None
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(archive, (str, os.PathLike)):
            with open(archive, "rb") as file:
                response = self._transport.request(
                    "POST",
                    "/images/import",
                    params=params,
                    content=_chunks(file),
                    headers={**headers, "Content-Length": str(os.fstat(file.fileno()).st_size)},
                    timeout=timeout,
                )
        else:
            response = self._transport.request(
                "POST",
                "/images/import",
                params=params,
                content=_chunks(archive),
                headers=headers,
                timeout=timeout,
            )
        data = response.json()
        return [Image.from_json(i) for i in data.get("images", [])]


def _chunks(file: IO[bytes]) -> Iterator[bytes]:
    while True:
        chunk = file.read(UPLOAD_CHUNK)
        if not chunk:
            return
        yield chunk


_STATUS: Dict[str, int] = {
    "invalid_request": 400,
    "forbidden": 403,
    "image_not_found": 404,
    "image_pull_failed": 422,
    "internal": 500,
}


def _status_of(code: str) -> int:
    """The HTTP status a failed request with this code answers with."""
    return _STATUS.get(code, 500)
