"""Files of a session: list, stat, streamed upload and download, delete, mkdir, move."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Mapping, Optional, Union

from ._http import Transport
from .sessions import parse_time

__all__ = ["FileInfo", "Files", "ProgressCallback", "CHUNK_SIZE"]

ProgressCallback = Callable[[int, Optional[int]], None]
"""Called as ``progress(bytes_done, bytes_total)``; ``bytes_total`` is ``None`` when unknown."""

CHUNK_SIZE = 256 * 1024
"""Bytes per chunk of a streamed upload or download."""

Source = Union[bytes, str, "os.PathLike[str]", BinaryIO]


@dataclass
class FileInfo:
    """One file or directory of a session."""

    path: str
    name: str
    type: str
    size: int
    mode: str = ""
    modified_at: Optional[datetime] = None
    link_target: Optional[str] = None

    @property
    def is_dir(self) -> bool:
        """Whether this is a directory."""
        return self.type in ("directory", "dir")

    @property
    def is_file(self) -> bool:
        """Whether this is a regular file."""
        return self.type == "file"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FileInfo":
        """Parses the wire form."""
        modified = data.get("modifiedAt")
        path = str(data.get("path", ""))
        return cls(
            path=path,
            name=str(data.get("name", os.path.basename(path))),
            type=str(data.get("type", "file")),
            size=int(data.get("size", 0) or 0),
            mode=str(data.get("mode", "")),
            modified_at=parse_time(modified) if isinstance(modified, str) else None,
            link_target=data.get("linkTarget"),
        )


def _chunks(stream: BinaryIO, total: Optional[int], progress: Optional[ProgressCallback]) -> Iterator[bytes]:
    done = 0
    if progress:
        progress(0, total)
    while True:
        chunk = stream.read(CHUNK_SIZE)
        if not chunk:
            break
        done += len(chunk)
        if progress:
            progress(done, total)
        yield chunk


class Files:
    """The filesystem of one session (``/sessions/{id}/files…``). Relative paths are relative
    to ``/workspace``."""

    def __init__(self, transport: Transport, session_path: str) -> None:
        self._transport = transport
        self._base = f"{session_path}/files"

    def list(self, path: str = "/workspace", depth: Optional[int] = None) -> List[FileInfo]:
        """The entries below directory ``path`` (``depth`` levels, default 1)."""
        data = self._transport.json("GET", self._base, params={"path": path, "depth": depth})
        entries: List[Any]
        if isinstance(data, dict):
            entries = data.get("entries") or data.get("files") or data.get("items") or []
        else:
            entries = data or []
        return [FileInfo.from_json(e) for e in entries]

    def stat(self, path: str) -> FileInfo:
        """What ``path`` is."""
        return FileInfo.from_json(self._transport.json("GET", f"{self._base}/stat", params={"path": path}))

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists."""
        from .errors import SandboxAPIError

        try:
            self.stat(path)
            return True
        except SandboxAPIError as e:
            if e.status_code == 404:
                return False
            raise

    def upload(
        self,
        path: str,
        data: Source,
        on_progress: Optional[ProgressCallback] = None,
        timeout: Optional[float] = None,
        *,
        parents: bool = True,
        overwrite: bool = True,
        mode: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Writes ``data`` to ``path``, streamed (``PUT …/files/content``).

        ``data`` is bytes, a local file path, or a binary file object. ``on_progress(done,
        total)`` is called as chunks go out. Missing parent directories are created unless
        ``parents=False``; an existing file is replaced unless ``overwrite=False`` (409).
        ``mode`` is an octal string (``"0644"``). Returns the server's answer (``files`` with
        the path and size written).
        """
        stream: BinaryIO
        close = False
        total: Optional[int] = None
        if isinstance(data, (bytes, bytearray, memoryview)):
            raw = bytes(data)
            stream, total = io.BytesIO(raw), len(raw)
        elif isinstance(data, (str, os.PathLike)):
            stream, close = open(data, "rb"), True
            total = os.fstat(stream.fileno()).st_size
        else:
            stream = data
            try:
                total = os.fstat(stream.fileno()).st_size - stream.tell()
            except (AttributeError, OSError, io.UnsupportedOperation):
                total = None
        headers = {"Content-Type": "application/octet-stream"}
        if total is not None:
            headers["Content-Length"] = str(total)
        try:
            response = self._transport.request(
                "PUT",
                f"{self._base}/content",
                params={
                    "path": path,
                    "parents": "true" if parents else "false",
                    "overwrite": "true" if overwrite else "false",
                    "mode": mode,
                },
                content=_chunks(stream, total, on_progress),
                headers=headers,
                timeout=timeout,
            )
        finally:
            if close:
                stream.close()
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        return answer if isinstance(answer, dict) else {"files": answer}

    def write(self, path: str, content: Union[str, bytes], *, parents: bool = True) -> Dict[str, Any]:
        """Writes text (UTF-8) or bytes to ``path``; missing parent directories are created
        unless ``parents=False`` (404 when the parent is missing)."""
        data = content.encode() if isinstance(content, str) else content
        return self.upload(path, data, parents=parents)

    def upload_many(self, files: Mapping[str, Union[bytes, str]], *, parents: bool = True) -> Dict[str, Any]:
        """Uploads several files in one multipart request (``POST …/files``):
        ``{"/workspace/a.txt": b"…", …}``. Missing parent directories are created unless
        ``parents=False``."""
        parts = [
            ("file", (path, data.encode() if isinstance(data, str) else data, "application/octet-stream"))
            for path, data in files.items()
        ]
        response = self._transport.request(
            "POST", self._base, params={"parents": "true" if parents else "false"}, files=parts
        )
        answer = response.json() if response.content else {}
        return answer if isinstance(answer, dict) else {"files": answer}

    def download(
        self,
        path: str,
        destination: Union[None, str, "os.PathLike[str]", BinaryIO] = None,
        on_progress: Optional[ProgressCallback] = None,
        timeout: Optional[float] = None,
    ) -> Union[bytes, int]:
        """Reads ``path``, streamed (``GET …/files/content``).

        Without ``destination`` returns the bytes; with a local path or binary file object
        writes there and returns the byte count. ``on_progress(done, total)`` follows along.
        """
        out: BinaryIO
        close = False
        if destination is None:
            out = io.BytesIO()
        elif isinstance(destination, (str, os.PathLike)):
            out, close = open(destination, "wb"), True
        else:
            out = destination
        done = 0
        try:
            with self._transport.stream(
                "GET", f"{self._base}/content", params={"path": path}, timeout=timeout
            ) as response:
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
                if on_progress:
                    on_progress(0, total)
                for chunk in response.iter_bytes(CHUNK_SIZE):
                    out.write(chunk)
                    done += len(chunk)
                    if on_progress:
                        on_progress(done, total)
        finally:
            if close:
                out.close()
        if destination is None:
            assert isinstance(out, io.BytesIO)
            return out.getvalue()
        return done

    def read(self, path: str) -> bytes:
        """The content of ``path``."""
        data = self.download(path)
        assert isinstance(data, bytes)
        return data

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """The content of ``path`` as text."""
        return self.read(path).decode(encoding)

    def delete(self, path: str, recursive: bool = False) -> None:
        """Deletes a file, or a directory (with ``recursive=True`` when not empty)."""
        self._transport.request(
            "DELETE", self._base, params={"path": path, "recursive": "true" if recursive else None}
        )

    def mkdir(self, path: str, parents: bool = True, mode: Optional[str] = None) -> Optional[FileInfo]:
        """Creates a directory (and its parents, by default)."""
        body: Dict[str, Any] = {"path": path, "parents": parents}
        if mode is not None:
            body["mode"] = mode
        data = self._transport.json("POST", f"{self._base}/mkdir", json_body=body)
        return FileInfo.from_json(data) if isinstance(data, dict) and "path" in data else None

    def move(
        self, source: str, destination: str, overwrite: bool = False, *, parents: bool = True
    ) -> Optional[FileInfo]:
        """Moves or renames ``source`` to ``destination`` (409 if it exists, unless
        ``overwrite``). Missing parent directories of ``destination`` are created unless
        ``parents=False`` (404 when one is missing)."""
        body = {"from": source, "to": destination, "overwrite": overwrite, "parents": parents}
        data = self._transport.json("POST", f"{self._base}/move", json_body=body)
        return FileInfo.from_json(data) if isinstance(data, dict) and "path" in data else None
