"""``client.images`` and ``session.snapshot`` against a real server, with a real registry
(Debian's ``docker-registry`` on a loopback port, filled with ``skopeo``) and an OCI image
layout built here from a real tar layer."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import List, Optional

import pytest

from hutch import Image, PullProgress, SandboxOperationError, SessionsClient

from conftest import HutchServer, free_port, push_layout


def _blob(blobs: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_layout(root: Path, files: dict, links: Optional[dict] = None) -> Path:
    """An OCI image layout (tag ``latest``) of one gzipped layer holding ``files`` (name →
    (content, mode) or content) and the symlinks ``links`` (name → target)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in sorted({str(Path(n).parent) for n in [*files, *(links or {})]} - {"."}):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, content in files.items():
            data, mode = content if isinstance(content, tuple) else (content, 0o644)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    layer = _blob(blobs, gzip.compress(raw.getvalue(), mtime=0))
    config = _blob(
        blobs,
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Env": ["GREETING=hi"], "Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }
        ).encode(),
    )
    manifest = _blob(
        blobs,
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                "layers": [
                    {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}
                ],
            }
        ).encode(),
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    (root / "index.json").write_text(json.dumps(index))
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return root


def tarball(layout: Path, into: Path) -> Path:
    """The layout as an uncompressed tarball, as ``skopeo copy … oci-archive:`` writes one."""
    path = into / "image.tar"
    with tarfile.open(path, "w") as tar:
        for item in sorted(layout.iterdir()):
            tar.add(item, arcname=item.name)
    return path


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    return write_layout(tmp_path / "layout", {"hello.txt": b"hello from an image\n"})


def test_pull_list_get_and_delete(image_server: HutchServer, registry: str, layout: Path) -> None:
    reference = f"{registry}/sdk/hello:1"
    push_layout(layout, reference)
    client = image_server.client()
    admin = SessionsClient(image_server.api_url, bearer_token=image_server.token("ops", admin=True))
    progress: List[PullProgress] = []
    image = client.images.pull(reference, on_progress=progress.append)
    assert isinstance(image, Image)
    assert image.name == reference
    assert image.layers == 1 and image.sessions == 0 and not image.snapshot
    assert [p.status for p in progress][-1] == "done"
    assert reference in [i.name for i in client.images.list()]

    detail = client.images.get(reference)
    assert detail.digest == image.digest
    assert detail.config.env == ["GREETING=hi"]
    assert detail.config.cmd == ["/bin/sh"]
    assert len(detail.layer_digests) == 1

    with pytest.raises(SandboxOperationError) as denied:
        client.images.delete(reference)
    assert denied.value.status_code == 403 and denied.value.code == "forbidden"
    assert admin.images.delete(reference).name == reference
    with pytest.raises(SandboxOperationError) as missing:
        client.images.get(reference)
    assert missing.value.status_code == 404 and missing.value.code == "image_not_found"


def test_failed_pulls_raise_typed_errors(image_server: HutchServer, registry: str) -> None:
    client = image_server.client()
    with pytest.raises(SandboxOperationError) as missing:
        client.images.pull(f"{registry}/sdk/missing:1")
    assert missing.value.code == "image_not_found"
    with pytest.raises(SandboxOperationError) as bad:
        client.images.pull("Not A Reference")
    assert bad.value.status_code == 400
    with pytest.raises(SandboxOperationError) as failed:
        client.images.pull(f"127.0.0.1:{free_port()}/x:1")
    assert failed.value.code == "image_pull_failed"
    assert failed.value.details["registryAnswer"]


def test_import_is_for_admins(image_server: HutchServer, layout: Path, tmp_path: Path) -> None:
    archive = tarball(layout, tmp_path)
    client = image_server.client()
    with pytest.raises(SandboxOperationError) as denied:
        client.images.import_(archive, name="sdk/imported:1")
    assert denied.value.status_code == 403
    admin = SessionsClient(image_server.api_url, bearer_token=image_server.token("ops", admin=True))
    images = admin.images.import_(archive, name="sdk/imported:1")
    assert [i.name for i in images] == ["docker.io/sdk/imported:1"]
    with open(archive, "rb") as file:
        again = admin.images.import_(file, name="sdk/imported:2")
    assert again[0].digest == images[0].digest
    for name in ("sdk/imported:1", "sdk/imported:2"):
        admin.images.delete(name)


def test_a_default_session_cannot_be_snapshotted(image_server: HutchServer) -> None:
    client = image_server.client()
    session = client.create_session(ttl=600)
    try:
        with pytest.raises(SandboxOperationError) as refused:
            session.snapshot("my-env")
        assert refused.value.status_code == 409
        with pytest.raises(SandboxOperationError) as invalid:
            session.snapshot("Not Valid")
        assert invalid.value.status_code == 400
    finally:
        client.delete_session(session.session_id)


def test_snapshot_then_fork(image_server: HutchServer, registry: str, tmp_path: Path) -> None:
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.skip("busybox-static is needed (scripts/deps.sh installs it)")
    layout = write_layout(
        tmp_path / "busybox",
        {"bin/busybox": (busybox.read_bytes(), 0o755), "root/.keep": b""},
        {f"bin/{applet}": "busybox" for applet in ("sh", "cat", "echo", "mkdir")},
    )
    push_layout(layout, f"{registry}/library/busybox:sdk")
    client = image_server.client()
    source = client.create_session(ttl=600, image="busybox:sdk")
    try:
        assert source.commands.run("echo prepared > /root/state.txt").exit_code == 0
        snapshot = source.snapshot("sdk-env")
        assert snapshot.name == "sdk-env" and snapshot.snapshot and snapshot.layers == 2
        later = client.create_session(ttl=600, image="sdk-env")
        assert later.commands.run("cat /root/state.txt").stdout == "prepared\n"
        forks = source.fork(count=3, ttl=600)
        assert len(forks) == 3
        for fork in forks:
            assert fork.image.startswith("fork-")
            assert fork.commands.run("cat /root/state.txt").stdout == "prepared\n"
        with pytest.raises(ValueError):
            source.fork(count=0)
    finally:
        for s in client.list_sessions(limit=100):
            client.delete_session(s.session_id)
    client.images.delete("sdk-env")
