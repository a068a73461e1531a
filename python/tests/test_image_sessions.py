"""A session on ``python:3.11``, as the SDK's usage example shows it: commands, ``/code``, an
interpreter context, files, then a snapshot and forks, against a real server that pulls the
image from a real registry standing in for Docker Hub.

The image is Debian bookworm with ``python3`` (``mmdebstrap``, one layer), pushed into the test
registry as ``library/python:3.11``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, List

import pytest

from hutch import SessionsClient

from conftest import HutchServer, push_layout

# The Rust image tests cache the same layout under the same name (`debian_python_layout()` in
# crates/hutch-image/tests/support/mod.rs), so both share one build.
CACHE = Path(tempfile.gettempdir()) / "hutch-image-tests" / "image-fixtures" / "debian-python3-v1"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json(value: Any) -> bytes:
    """JSON as the Rust fixture writes it (serde_json: sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _put_blob(blobs: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _build_debian_python(root: Path) -> None:
    """Builds the layout into ``root`` exactly as the Rust fixture does: the same
    ``mmdebstrap`` command, one ``gzip -1 -n`` layer, the same image config."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    tar = root / "rootfs.tar"
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase", "--include=python3", "--mode=root",
         "bookworm", str(tar), "http://deb.debian.org/debian"],
        check=True,
    )
    diff_id = _sha256(tar)
    subprocess.run(["gzip", "-1", "-n", str(tar)], check=True)
    gz = root / "rootfs.tar.gz"
    layer_hex = _sha256(gz)
    layer = {"digest": f"sha256:{layer_hex}", "size": gz.stat().st_size}
    gz.rename(blobs / layer_hex)
    config = _put_blob(blobs, _json({
        "created": "2026-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"],
                   "WorkingDir": "", "User": "", "Cmd": ["python3"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
    }))
    manifest = _put_blob(blobs, _json({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }))
    (root / "index.json").write_bytes(_json({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **manifest,
        "annotations": {"org.opencontainers.image.ref.name": "latest"},
    }]}))
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')


def debian_python_layout() -> Path:
    """The cached Debian-with-python3 layout, built on the first call (minutes: it downloads
    Debian's packages). Under CI the Rust image tests, which run first, have usually built it
    already."""
    if (CACHE / "index.json").exists():
        return CACHE
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is needed to build the Debian image (scripts/deps.sh installs it)")
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    building = CACHE.parent / f"{CACHE.name}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    _build_debian_python(building)
    try:
        building.rename(CACHE)
    except OSError:
        # Another run built it meanwhile.
        shutil.rmtree(building, ignore_errors=True)
    return CACHE


@pytest.fixture(scope="module")
def python_image(registry: str) -> str:
    """``python:3.11`` in the test registry, which the server uses as Docker Hub's mirror."""
    push_layout(debian_python_layout(), f"{registry}/library/python:3.11")
    return "python:3.11"


@pytest.fixture(scope="module")
def hutch_server(image_server: HutchServer) -> HutchServer:
    """This module's server is the one that pulls from the test registry (``client`` and its
    clean-up come from conftest)."""
    return image_server


@pytest.fixture
def session(client: SessionsClient, python_image: str) -> Any:
    """A session on ``python:3.11``, created as the SDK's usage example creates one."""
    session = client.create_session(ttl=3600, image=python_image)
    assert session.image == "python:3.11"
    return session


def test_commands_see_the_images_debian_not_the_host(session: Any) -> None:
    os_release = session.commands.run("cat /etc/os-release")
    assert os_release.exit_code == 0, os_release.stderr
    assert "VERSION_CODENAME=bookworm" in os_release.stdout
    # This host may be bookworm too, so the text alone does not tell the roots apart: the
    # host's skopeo (which filled the registry) is not in the image.
    assert shutil.which("skopeo") is not None
    probe = session.commands.run("command -v skopeo || echo absent; pwd")
    assert probe.stdout == "absent\n/workspace\n"


def test_code_runs_the_images_python(session: Any) -> None:
    result = session.code.run("python", "import sys; print(sys.executable, sys.version_info[:2])")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "/usr/bin/python3 (3, 11)\n"


def test_an_interpreter_context_keeps_state(session: Any) -> None:
    interpreter = session.code_interpreter()
    context = interpreter.create_context(language="python")
    out: List[str] = []
    first = interpreter.execute("total = 20\nprint('set')", context_id=context["id"],
                                on_stdout=out.append)
    assert first.error is None and "".join(out) == "set\n"
    second = interpreter.execute("total + 22", context_id=context["id"])
    assert second.error is None
    assert second.text == "42"


def test_files_write_read_and_list(session: Any) -> None:
    session.files.write("/workspace/data/notes.txt", "written through the file API\n")
    assert session.files.read_text("/workspace/data/notes.txt") == "written through the file API\n"
    assert [e.name for e in session.files.list("/workspace/data")] == ["notes.txt"]
    # The image's python3 reads what the file API wrote.
    read = session.commands.run("python3 -c \"print(open('data/notes.txt').read(), end='')\"")
    assert read.stdout == "written through the file API\n"


def test_snapshot_and_forks_see_a_file_written_before(
    session: Any, client: SessionsClient
) -> None:
    session.files.write("/workspace/state.json", '{"step": 1}')
    snapshot = session.snapshot("py-prepared")
    try:
        assert snapshot.snapshot and snapshot.name == "py-prepared"
        later = client.create_session(ttl=3600, image="py-prepared")
        assert later.files.read_text("/workspace/state.json") == '{"step": 1}'

        forks = session.fork(2)
        assert len(forks) == 2
        assert len({f.session_id for f in forks} | {session.session_id}) == 3
        for fork in forks:
            step = fork.code.run("python", "import json; print(json.load(open('state.json'))['step'])")
            assert step.stdout == "1\n", step.stderr
        # Forks are copies: a write in one is not seen by its source or its sibling.
        forks[0].files.write("/workspace/state.json", '{"step": 2}')
        assert session.files.read_text("/workspace/state.json") == '{"step": 1}'
        assert forks[1].files.read_text("/workspace/state.json") == '{"step": 1}'
    finally:
        for s in client.list_sessions(limit=100):
            client.delete_session(s.session_id)
        client.images.delete("py-prepared")
