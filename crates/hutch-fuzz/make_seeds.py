#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (corpus/<target>/seed-*) from real inputs:
archives made by GNU tar and Python's tarfile (the hostile ones an attacker would send among
them), multipart bodies encoded by urllib3, worker control lines as the workers write them,
HS256 tokens signed with the targets' secret, and an OCI layout image archive.

Run it from anywhere; it rewrites only files named seed-*."""

import base64, gzip, hashlib, hmac, io, json, os, subprocess, tarfile, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = b"hutch-fuzz-secret-0123456789abcdef"


def seed(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def gnu_tar(*extra):
    """A tar of a small tree (file, directory, symlink, hard link, long name) by GNU tar."""
    with tempfile.TemporaryDirectory() as t:
        os.makedirs(f"{t}/tree/sub/deeper")
        with open(f"{t}/tree/hello.txt", "w") as f:
            f.write("hello\n")
        with open(f"{t}/tree/sub/data.bin", "wb") as f:
            f.write(bytes(range(256)))
        os.symlink("hello.txt", f"{t}/tree/link")
        os.symlink("../hello.txt", f"{t}/tree/sub/up")
        os.link(f"{t}/tree/hello.txt", f"{t}/tree/hard")
        with open(f"{t}/tree/sub/deeper/" + "n" * 120, "w") as f:
            f.write("long name\n")
        return subprocess.run(["tar", "-C", f"{t}/tree", *extra, "-cf", "-", "."],
                              check=True, stdout=subprocess.PIPE).stdout


def crafted_tar(entries, fmt=tarfile.GNU_FORMAT):
    """A tar of (name, type, content-or-link) built member by member, names unchecked."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, kind, value in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mtime = 1700000000
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = value
                tar.addfile(info)
            elif kind == tarfile.DIRTYPE:
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
    return out.getvalue()


HOSTILE = {
    "dotdot": [("../escape", tarfile.REGTYPE, b"x")],
    "absolute": [("/escape", tarfile.REGTYPE, b"x")],
    "link-then-write": [("out", tarfile.SYMTYPE, "../../.."),
                        ("out/escape", tarfile.REGTYPE, b"x")],
    "abs-link-then-write": [("etc", tarfile.SYMTYPE, "/"), ("etc/escape", tarfile.REGTYPE, b"x")],
    "hardlink-outside": [("h", tarfile.LNKTYPE, "../../outside/x")],
    "through-existing-link": [("up/escape", tarfile.REGTYPE, b"x")],
    "through-existing-abs-link": [("host/escape", tarfile.REGTYPE, b"x")],
    "dir-through-existing-link": [("up/new/", tarfile.DIRTYPE, None),
                                  ("up/new/escape", tarfile.REGTYPE, b"x")],
    "dir-over-link": [("d", tarfile.SYMTYPE, "/tmp"), ("d", tarfile.DIRTYPE, None),
                      ("d/x", tarfile.REGTYPE, b"x")],
    "fifo": [("p", tarfile.FIFOTYPE, b"")],
}


def main():
    plain = gnu_tar()
    pax = gnu_tar("--format=pax")
    for target in ("files_archive", "storage_archive", "oci_layer"):
        seed(target, "gnu-tree.tar", plain)
        seed(target, "pax-tree.tar", pax)
        for name, entries in HOSTILE.items():
            seed(target, f"hostile-{name}.tar", crafted_tar(entries))
    seed("oci_layer", "gnu-tree.tar.gz", gzip.compress(plain, mtime=0))
    seed("oci_layer", "whiteouts.tar", crafted_tar([
        ("a", tarfile.DIRTYPE, None), ("a/.wh.b", tarfile.REGTYPE, b""),
        ("a/.wh..wh..opq", tarfile.REGTYPE, b""), (".wh...", tarfile.REGTYPE, b"")]))

    for i, path in enumerate([
            "/workspace/a/../b", "../../etc/passwd", "up/escape", "host/escape", "/proc/self/root",
            "a//b/./c/", "/", "~/x", "/workspace/up/../../x", "0644", "0o1777", "relative/name"]):
        seed("file_paths", f"path-{i}", path)

    import urllib3
    body, content_type = urllib3.encode_multipart_formdata([
        ("path", "/workspace/notes/a.txt"),
        ("file", ("a.txt", b"first file\n", "text/plain")),
        ("file", ("../b.bin", bytes(range(64)), "application/octet-stream")),
    ], boundary="hutchfuzzboundary")
    seed("multipart", "urllib3", content_type.encode() + b"\n" + body)

    lines = [b'{"type":"ready","kernel":"python"}\n',
             b'{"type":"result","data":{"text/plain":"42"}}\n{"type":"done","status":"ok",',
             b'"executionCount":1}\n', "h\u00e9llo \u2603".encode()[:-1], "\u2603".encode()[-1:] + b"\n"]
    seed("worker_pipes", "worker-session", b"\xff".join(lines))

    secret = b"hutch-fuzz-preface-secret-0123456789abcdef"
    seed("agent_preface", "accepted", b"HUTCH-AGENT/1 " + secret + b"\nGET /health HTTP/1.1\r\nHost: a\r\n\r\n")
    seed("agent_preface", "wrong-secret", b"HUTCH-AGENT/1 " + secret[:-1] + b"0\n")
    seed("agent_preface", "plain-http", b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
    seed("agent_preface", "too-long", b"HUTCH-AGENT/1 " + b"x" * 600 + b"\n")
    seed("websocket_frames", "text-binary-close", b"\x81\x02hi" + b"\x82\x7e\x01\x00" + b"\0" * 256
         + b"\x88\x02\x03\xe8")
    seed("websocket_frames", "open-after-ping", b"\x89\x00\x82\x05hello")
    seed("websocket_frames", "masked-cut", b"\x81\x85\x01\x02\x03\x04hel")
    seed("websocket_frames", "huge-length", b"\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xfe")
    seed("process_frames", "eof", b'{"type":"eof"}')
    seed("process_frames", "command", json.dumps(
        {"command": "echo hi", "env": {"A": "b"}, "cwd": "/workspace", "timeout": 5}).encode())
    seed("process_frames", "stdout", b'{"type":"stdout","seq":3,"data":"aGkK"}')
    seed("process_frames", "exit", b'{"type":"exit","exitCode":0,"durationMs":3,"timedOut":false}')

    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=")
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": "tenant-a", "admin": False,
                             "exp": int(time.time()) + 10 * 365 * 86400}).encode())
    sig = b64(hmac.new(SECRET, head + b"." + claims, hashlib.sha256).digest())
    seed("auth_headers", "bearer", b"Bearer " + head + b"." + claims + b"." + sig)
    seed("auth_headers", "host", b"8080-0191e3a4-8d1c-7c3e-9b7a-1f2e3d4c5b6a.preview.example.test:443")
    seed("auth_headers", "cookie", b"/path?hutch_token=abc&x=1")

    for i, ref in enumerate([
            "alpine", "docker.io/library/alpine:3.19", "localhost:5000/a/b-c_d.e:tag",
            "ghcr.io/org/img:1.0@sha256:" + "a" * 64, "[::1]:5000/x", "UPPER/case"]):
        seed("image_reference", f"ref-{i}", ref)

    # An OCI image layout, as `skopeo copy oci-archive:` or `docker save` (25+) writes it.
    def blob(tar, data):
        digest = hashlib.sha256(data).hexdigest()
        info = tarfile.TarInfo(f"blobs/sha256/{digest}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        return {"digest": f"sha256:{digest}", "size": len(data)}
    layer = gzip.compress(crafted_tar([("etc", tarfile.DIRTYPE, None),
                                       ("etc/hostname", tarfile.REGTYPE, b"fuzz\n")]), mtime=0)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
        config = blob(tar, json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode())
        layer_desc = blob(tar, layer)
        manifest = blob(tar, json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        **layer_desc}]}).encode())
        for name, data in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                           ("index.json", json.dumps({"schemaVersion": 2, "manifests": [{
                               "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               **manifest, "annotations": {
                                   "org.opencontainers.image.ref.name": "fuzz:1"}}]}).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    seed("image_archive", "oci-layout.tar", out.getvalue())


main()
