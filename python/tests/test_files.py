"""Files of a session: streamed upload and download with progress, list, mkdir, move, delete."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, List, Optional, Tuple

import pytest

from hutch import SandboxAPIError

pytestmark = pytest.mark.requires_route("PUT", "/v1/sessions/{id}/files/content")


def test_upload_and_download_bytes(session: Any) -> None:
    session.files.write("/workspace/hello.txt", "hello files")
    assert session.files.read_text("/workspace/hello.txt") == "hello files"
    assert session.commands.run("cat /workspace/hello.txt").stdout == "hello files"


def test_large_upload_streams_with_progress(session: Any, tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    local = tmp_path / "blob.bin"
    local.write_bytes(payload)
    seen: List[Tuple[int, Optional[int]]] = []
    session.files.upload("/workspace/blob.bin", local, on_progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (len(payload), len(payload))
    assert len(seen) > 2
    back = tmp_path / "back.bin"
    down: List[int] = []
    n = session.files.download("/workspace/blob.bin", back, on_progress=lambda d, t: down.append(d))
    assert n == len(payload)
    assert back.read_bytes() == payload
    assert down[-1] == len(payload)
    # The total is known from the start: the download asks for the bytes as they are.
    totals: List[Optional[int]] = []
    session.files.download("/workspace/blob.bin", tmp_path / "again.bin", on_progress=lambda d, t: totals.append(t))
    assert set(totals) == {len(payload)}


def test_a_failed_download_leaves_no_local_file(session: Any, tmp_path: Path) -> None:
    local = tmp_path / "missing.bin"
    with pytest.raises(SandboxAPIError):
        session.files.download("/workspace/no-such-file", local)
    assert not local.exists()


def test_upload_from_a_file_object(session: Any) -> None:
    session.files.upload("/workspace/obj.txt", io.BytesIO(b"from a file object"))
    assert session.files.read("/workspace/obj.txt") == b"from a file object"


def test_mkdir_list_move_delete(session: Any) -> None:
    session.files.mkdir("/workspace/a/b/c")
    session.files.write("/workspace/a/b/c/f.txt", "x")
    names = {e.name for e in session.files.list("/workspace/a/b/c")}
    assert names == {"f.txt"}
    entry = session.files.list("/workspace/a/b/c")[0]
    assert entry.is_file and entry.size == 1
    session.files.move("/workspace/a/b/c/f.txt", "/workspace/a/g.txt")
    assert session.files.exists("/workspace/a/g.txt")
    assert not session.files.exists("/workspace/a/b/c/f.txt")
    assert session.files.stat("/workspace/a/b").is_dir
    session.files.delete("/workspace/a", recursive=True)
    assert not session.files.exists("/workspace/a")


def test_missing_file_is_a_404(session: Any) -> None:
    with pytest.raises(SandboxAPIError) as info:
        session.files.read("/workspace/nope.txt")
    assert info.value.status_code == 404
    assert info.value.response is not None and info.value.response.status_code == 404


def test_upload_many_in_one_request(session: Any) -> None:
    answer = session.files.upload_many({"/workspace/m/one.txt": "1", "/workspace/m/two.txt": b"22"})
    assert [f.size for f in answer.files] == [1, 2]
    assert session.files.read_text("/workspace/m/two.txt") == "22"


def test_missing_parents_are_created_unless_refused(session: Any) -> None:
    session.files.write("/workspace/src.txt", "moved")
    with pytest.raises(SandboxAPIError) as info:
        session.files.move("/workspace/src.txt", "/workspace/new/dir/dst.txt", parents=False)
    assert info.value.status_code == 404
    assert session.files.exists("/workspace/src.txt")
    assert not session.files.exists("/workspace/new")

    session.files.move("/workspace/src.txt", "/workspace/new/dir/dst.txt")
    assert session.files.read_text("/workspace/new/dir/dst.txt") == "moved"
    assert not session.files.exists("/workspace/src.txt")

    with pytest.raises(SandboxAPIError) as info:
        session.files.write("/workspace/absent/a.txt", "x", parents=False)
    assert info.value.status_code == 404
    with pytest.raises(SandboxAPIError) as info:
        session.files.upload_many({"/workspace/absent/b.txt": "y"}, parents=False)
    assert info.value.status_code == 404
    assert not session.files.exists("/workspace/absent")
