"""Files of a session: list, stat, streamed upload and download, delete, mkdir, move
(:class:`Files`, and :class:`AsyncFiles` for event loops)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from datetime import datetime
from typing import (
    Any,
    AsyncIterator,
    BinaryIO,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
)

from ._http import AsyncTransport, Call, Transport
from .errors import SandboxAPIError
from .sessions import parse_time

__all__ = ["FileInfo", "WriteInfo", "Files", "AsyncFiles", "ProgressCallback", "CHUNK_SIZE"]

ProgressCallback = Callable[[int, Optional[int]], None]
"""Called as ``progress(bytes_done, bytes_total)``; ``bytes_total`` is ``None`` when unknown."""

CHUNK_SIZE = 256 * 1024
"""Bytes per chunk of a streamed upload or download."""

Source = Union[bytes, str, "os.PathLike[str]", BinaryIO]
Destination = Union[None, str, "os.PathLike[str]", BinaryIO]


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


@dataclass
class WriteInfo:
    """What an upload wrote: each file's path and size."""

    files: List[FileInfo]

    @classmethod
    def from_json(cls, data: Any) -> "WriteInfo":
        """Parses the wire form (``{"files": [{"path", "size"}, …]}``, or one file)."""
        if isinstance(data, Mapping) and isinstance(data.get("files"), list):
            items = data["files"]
        elif isinstance(data, list):
            items = data
        elif isinstance(data, Mapping) and "path" in data:
            items = [data]
        else:
            items = []
        return cls([FileInfo.from_json(f) for f in items if isinstance(f, Mapping)])


def _open_source(data: Source) -> Tuple[BinaryIO, bool, Optional[int]]:
    """The stream to read an upload from, whether to close it, and its size when known."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        return io.BytesIO(raw), False, len(raw)
    if isinstance(data, (str, os.PathLike)):
        stream = open(data, "rb")
        return stream, True, os.fstat(stream.fileno()).st_size
    try:
        total: Optional[int] = os.fstat(data.fileno()).st_size - data.tell()
    except (AttributeError, OSError, io.UnsupportedOperation):
        total = None
    return data, False, total


def _open_destination(destination: Destination) -> Tuple[BinaryIO, bool]:
    if destination is None:
        return io.BytesIO(), False
    if isinstance(destination, (str, os.PathLike)):
        return open(destination, "wb"), True
    return destination, False


def _discard_partial(destination: Destination) -> None:
    """Removes the local file a failed download opened (it holds nothing, or part of the file)."""
    if isinstance(destination, (str, os.PathLike)):
        try:
            os.unlink(destination)
        except OSError:
            pass


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


async def _async_chunks(
    stream: BinaryIO, total: Optional[int], progress: Optional[ProgressCallback]
) -> AsyncIterator[bytes]:
    for chunk in _chunks(stream, total, progress):
        yield chunk


class _Progress:
    """Counts the bytes of a download for its progress callback."""

    def __init__(self, headers: Mapping[str, str], progress: Optional[ProgressCallback]) -> None:
        length = headers.get("content-length")
        self.total = int(length) if length and length.isdigit() else None
        self.done = 0
        self._progress = progress
        if progress:
            progress(0, self.total)

    def add(self, chunk: bytes) -> bytes:
        self.done += len(chunk)
        if self._progress:
            self._progress(self.done, self.total)
        return chunk


def _ignore(_: Any) -> None:
    return None


def _entries(data: Any) -> List[FileInfo]:
    entries: List[Any]
    if isinstance(data, dict):
        entries = data.get("entries") or data.get("files") or data.get("items") or []
    else:
        entries = data or []
    return [FileInfo.from_json(e) for e in entries]


def _maybe_info(data: Any) -> Optional[FileInfo]:
    return FileInfo.from_json(data) if isinstance(data, dict) and "path" in data else None


def _missing(e: SandboxAPIError) -> bool:
    return e.status_code == 404


class _FileCalls:
    """The requests of one session's files, shared by both faces."""

    def __init__(self, session_path: str) -> None:
        self._base = f"{session_path}/files"

    def _list_call(self, path: str, depth: Optional[int]) -> Call[List[FileInfo]]:
        return Call("GET", self._base, params={"path": path, "depth": depth}, parse=_entries)

    def _stat_call(self, path: str) -> Call[FileInfo]:
        return Call("GET", f"{self._base}/stat", params={"path": path}, parse=FileInfo.from_json)

    def _upload_call(
        self,
        path: str,
        content: Any,
        total: Optional[int],
        timeout: Optional[float],
        parents: bool,
        overwrite: bool,
        mode: Optional[str],
    ) -> Call[WriteInfo]:
        headers = {"Content-Type": "application/octet-stream"}
        if total is not None:
            headers["Content-Length"] = str(total)
        return Call(
            "PUT",
            f"{self._base}/content",
            params={
                "path": path,
                "parents": "true" if parents else "false",
                "overwrite": "true" if overwrite else "false",
                "mode": mode,
            },
            content=content,
            headers=headers,
            timeout=timeout,
            parse=WriteInfo.from_json,
        )

    def _upload_many_call(self, files: Mapping[str, Union[bytes, str]], parents: bool) -> Call[WriteInfo]:
        parts = [
            ("file", (path, data.encode() if isinstance(data, str) else data, "application/octet-stream"))
            for path, data in files.items()
        ]
        return Call(
            "POST",
            self._base,
            params={"parents": "true" if parents else "false"},
            files=parts,
            parse=WriteInfo.from_json,
        )

    def _download_call(self, path: str, timeout: Optional[float]) -> Call[None]:
        # Bytes as they are: gzip (httpx asks for it by default) costs the server CPU on data
        # that rarely shrinks, and hides the length that progress reports as the total.
        return Call(
            "GET",
            f"{self._base}/content",
            params={"path": path},
            headers={"Accept-Encoding": "identity"},
            timeout=timeout,
        )

    def _delete_call(self, path: str, recursive: bool) -> Call[None]:
        return Call(
            "DELETE",
            self._base,
            params={"path": path, "recursive": "true" if recursive else None},
            parse=_ignore,
        )

    def _mkdir_call(self, path: str, parents: bool, mode: Optional[str]) -> Call[Optional[FileInfo]]:
        body: Dict[str, Any] = {"path": path, "parents": parents}
        if mode is not None:
            body["mode"] = mode
        return Call("POST", f"{self._base}/mkdir", json_body=body, parse=_maybe_info)

    def _move_call(
        self, source: str, destination: str, overwrite: bool, parents: bool
    ) -> Call[Optional[FileInfo]]:
        body = {"from": source, "to": destination, "overwrite": overwrite, "parents": parents}
        return Call("POST", f"{self._base}/move", json_body=body, parse=_maybe_info)


class Files(_FileCalls):
    """The filesystem of one session (``/sessions/{id}/files…``). Relative paths are relative
    to ``/workspace``."""

    def __init__(self, transport: Transport, session_path: str) -> None:
        super().__init__(session_path)
        self._transport = transport

    def list(self, path: str = "/workspace", depth: Optional[int] = None) -> List[FileInfo]:
        """The entries below directory ``path`` (``depth`` levels, default 1)."""
        return self._transport.call(self._list_call(path, depth))

    def stat(self, path: str) -> FileInfo:
        """What ``path`` is."""
        return self._transport.call(self._stat_call(path))

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists."""
        try:
            self.stat(path)
            return True
        except SandboxAPIError as e:
            if _missing(e):
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
    ) -> WriteInfo:
        """Writes ``data`` to ``path``, streamed (``PUT …/files/content``).

        ``data`` is bytes, a local file path, or a binary file object. ``on_progress(done,
        total)`` is called as chunks go out. Missing parent directories are created unless
        ``parents=False``; an existing file is replaced unless ``overwrite=False`` (409).
        ``mode`` is an octal string (``"0644"``). Returns what was written.
        """
        stream, close, total = _open_source(data)
        try:
            return self._transport.call(
                self._upload_call(
                    path, _chunks(stream, total, on_progress), total, timeout, parents, overwrite, mode
                )
            )
        finally:
            if close:
                stream.close()

    def write(self, path: str, content: Union[str, bytes], *, parents: bool = True) -> WriteInfo:
        """Writes text (UTF-8) or bytes to ``path``; missing parent directories are created
        unless ``parents=False`` (404 when the parent is missing)."""
        data = content.encode() if isinstance(content, str) else content
        return self.upload(path, data, parents=parents)

    def upload_many(self, files: Mapping[str, Union[bytes, str]], *, parents: bool = True) -> WriteInfo:
        """Uploads several files in one multipart request (``POST …/files``):
        ``{"/workspace/a.txt": b"…", …}``. Missing parent directories are created unless
        ``parents=False``."""
        return self._transport.call(self._upload_many_call(files, parents))

    def stream(
        self,
        path: str,
        on_progress: Optional[ProgressCallback] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[bytes]:
        """The content of ``path`` in chunks, as it arrives."""
        with self._transport.stream(self._download_call(path, timeout)) as response:
            progress = _Progress(response.headers, on_progress)
            for chunk in response.iter_bytes(CHUNK_SIZE):
                yield progress.add(chunk)

    def download(
        self,
        path: str,
        destination: Destination = None,
        on_progress: Optional[ProgressCallback] = None,
        timeout: Optional[float] = None,
    ) -> Union[bytes, int]:
        """Reads ``path``, streamed (``GET …/files/content``).

        Without ``destination`` returns the bytes; with a local path or binary file object
        writes there and returns the byte count. ``on_progress(done, total)`` follows along.
        """
        out, close = _open_destination(destination)
        done = 0
        try:
            for chunk in self.stream(path, on_progress, timeout):
                out.write(chunk)
                done += len(chunk)
        except BaseException:
            if close:
                out.close()
                _discard_partial(destination)
            raise
        if close:
            out.close()
        if isinstance(out, io.BytesIO) and destination is None:
            return out.getvalue()
        return done

    def read(self, path: str) -> bytes:
        """The content of ``path``."""
        return b"".join(self.stream(path))

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """The content of ``path`` as text."""
        return self.read(path).decode(encoding)

    def delete(self, path: str, recursive: bool = False) -> None:
        """Deletes a file, or a directory (with ``recursive=True`` when not empty)."""
        self._transport.call(self._delete_call(path, recursive))

    def mkdir(self, path: str, parents: bool = True, mode: Optional[str] = None) -> Optional[FileInfo]:
        """Creates a directory (and its parents, by default)."""
        return self._transport.call(self._mkdir_call(path, parents, mode))

    def move(
        self, source: str, destination: str, overwrite: bool = False, *, parents: bool = True
    ) -> Optional[FileInfo]:
        """Moves or renames ``source`` to ``destination`` (409 if it exists, unless
        ``overwrite``). Missing parent directories of ``destination`` are created unless
        ``parents=False`` (404 when one is missing)."""
        return self._transport.call(self._move_call(source, destination, overwrite, parents))


class AsyncFiles(_FileCalls):
    """:class:`Files` for event loops."""

    def __init__(self, transport: AsyncTransport, session_path: str) -> None:
        super().__init__(session_path)
        self._transport = transport

    async def list(self, path: str = "/workspace", depth: Optional[int] = None) -> List[FileInfo]:
        """The entries below directory ``path`` (``depth`` levels, default 1)."""
        return await self._transport.call(self._list_call(path, depth))

    async def stat(self, path: str) -> FileInfo:
        """What ``path`` is."""
        return await self._transport.call(self._stat_call(path))

    async def exists(self, path: str) -> bool:
        """Whether ``path`` exists."""
        try:
            await self.stat(path)
            return True
        except SandboxAPIError as e:
            if _missing(e):
                return False
            raise

    async def upload(
        self,
        path: str,
        data: Source,
        on_progress: Optional[ProgressCallback] = None,
        timeout: Optional[float] = None,
        *,
        parents: bool = True,
        overwrite: bool = True,
        mode: Optional[str] = None,
    ) -> WriteInfo:
        """Writes ``data`` to ``path``, streamed; see :meth:`Files.upload`."""
        stream, close, total = _open_source(data)
        try:
            return await self._transport.call(
                self._upload_call(
                    path,
                    _async_chunks(stream, total, on_progress),
                    total,
                    timeout,
                    parents,
                    overwrite,
                    mode,
                )
            )
        finally:
            if close:
                stream.close()

    async def write(self, path: str, content: Union[str, bytes], *, parents: bool = True) -> WriteInfo:
        """Writes text (UTF-8) or bytes to ``path``."""
        data = content.encode() if isinstance(content, str) else content
        return await self.upload(path, data, parents=parents)

    async def upload_many(
        self, files: Mapping[str, Union[bytes, str]], *, parents: bool = True
    ) -> WriteInfo:
        """Uploads several files in one multipart request; see :meth:`Files.upload_many`."""
        return await self._transport.call(self._upload_many_call(files, parents))

    async def stream(
        self,
        path: str,
        on_progress: Optional[ProgressCallback] = None,
        timeout: Optional[float] = None,
    ) -> AsyncIterator[bytes]:
        """The content of ``path`` in chunks, as it arrives: ``async for chunk in …``."""
        async with self._transport.stream(self._download_call(path, timeout)) as response:
            progress = _Progress(response.headers, on_progress)
            async for chunk in response.aiter_bytes(CHUNK_SIZE):
                yield progress.add(chunk)

    async def download(
        self,
        path: str,
        destination: Destination = None,
        on_progress: Optional[ProgressCallback] = None,
        timeout: Optional[float] = None,
    ) -> Union[bytes, int]:
        """Reads ``path``, streamed; see :meth:`Files.download`."""
        out, close = _open_destination(destination)
        done = 0
        try:
            async for chunk in self.stream(path, on_progress, timeout):
                out.write(chunk)
                done += len(chunk)
        except BaseException:
            if close:
                out.close()
                _discard_partial(destination)
            raise
        if close:
            out.close()
        if isinstance(out, io.BytesIO) and destination is None:
            return out.getvalue()
        return done

    async def read(self, path: str) -> bytes:
        """The content of ``path``."""
        return b"".join([chunk async for chunk in self.stream(path)])

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """The content of ``path`` as text."""
        return (await self.read(path)).decode(encoding)

    async def delete(self, path: str, recursive: bool = False) -> None:
        """Deletes a file, or a directory (with ``recursive=True`` when not empty)."""
        await self._transport.call(self._delete_call(path, recursive))

    async def mkdir(
        self, path: str, parents: bool = True, mode: Optional[str] = None
    ) -> Optional[FileInfo]:
        """Creates a directory (and its parents, by default)."""
        return await self._transport.call(self._mkdir_call(path, parents, mode))

    async def move(
        self, source: str, destination: str, overwrite: bool = False, *, parents: bool = True
    ) -> Optional[FileInfo]:
        """Moves or renames ``source`` to ``destination``; see :meth:`Files.move`."""
        return await self._transport.call(self._move_call(source, destination, overwrite, parents))
