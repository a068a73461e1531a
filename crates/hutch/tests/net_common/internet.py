"""The network tests' own internet, run inside a network namespace the test made.

- an HTTP server on port 80 of every address, serving a directory that holds `hello.txt`,
  `big.bin` (2 MiB),
  a package index (`simple/hutchtestpkg/`) with a wheel this script builds, and an npm
  registry (`npm/`: the packument `npm/hutchtestnpm`, whose tarball, also built here, is
  `npm-files/hutchtestnpm-1.0.0.tgz`);
- a DNS server on 203.0.113.53:53 answering the test names below with A records (TTL 60),
  no record for AAAA, NXDOMAIN for anything else.

Prints `ready` once both listen.
"""
import base64
import hashlib
import http.server
import io
import json
import os
import socket
import socketserver
import sys
import tarfile
import threading
import zipfile

NAMES = {
    "allowed.test": "203.0.113.10",
    "other.test": "203.0.113.10",  # the same host as allowed.test
    "second.test": "203.0.113.11",
    "pkgs.test": "203.0.113.12",
}


def build_index(root):
    os.makedirs(os.path.join(root, "simple", "hutchtestpkg"), exist_ok=True)
    with open(os.path.join(root, "hello.txt"), "w") as f:
        f.write("hello from the test internet\n")
    with open(os.path.join(root, "big.bin"), "wb") as f:
        f.write(b"\0" * (2 * 1024 * 1024))
    wheel = "hutchtestpkg-0.1-py3-none-any.whl"
    files = {
        "hutchtestpkg/__init__.py": b"GREETING = 'hello from hutchtestpkg'\n",
        "hutchtestpkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: hutchtestpkg\nVersion: 0.1\n",
        "hutchtestpkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: hutch-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("hutchtestpkg-0.1.dist-info/RECORD,,")
    files["hutchtestpkg-0.1.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(os.path.join(root, wheel), "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    with open(os.path.join(root, "simple", "hutchtestpkg", "index.html"), "w") as f:
        f.write(f'<html><body><a href="../../{wheel}">{wheel}</a></body></html>\n')
    with open(os.path.join(root, "simple", "index.html"), "w") as f:
        f.write('<html><body><a href="hutchtestpkg/">hutchtestpkg</a></body></html>\n')


def build_npm_registry(root):
    files = {
        "package/package.json": json.dumps(
            {"name": "hutchtestnpm", "version": "1.0.0", "main": "index.js"}
        ).encode(),
        "package/index.js": b"module.exports = { greeting: 'hello from hutchtestnpm' };\n",
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    tarball = raw.getvalue()
    os.makedirs(os.path.join(root, "npm"), exist_ok=True)
    os.makedirs(os.path.join(root, "npm-files"), exist_ok=True)
    with open(os.path.join(root, "npm-files", "hutchtestnpm-1.0.0.tgz"), "wb") as f:
        f.write(tarball)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    version = {
        "name": "hutchtestnpm",
        "version": "1.0.0",
        "main": "index.js",
        "dist": {
            "tarball": "http://203.0.113.12/npm-files/hutchtestnpm-1.0.0.tgz",
            "shasum": hashlib.sha1(tarball).hexdigest(),
            "integrity": integrity,
        },
    }
    packument = {
        "name": "hutchtestnpm",
        "dist-tags": {"latest": "1.0.0"},
        "versions": {"1.0.0": version},
    }
    with open(os.path.join(root, "npm", "hutchtestnpm"), "w") as f:
        json.dump(packument, f)


def read_question(msg):
    pos, labels = 12, []
    while msg[pos]:
        n = msg[pos]
        labels.append(msg[pos + 1 : pos + 1 + n].decode().lower())
        pos += 1 + n
    qtype = int.from_bytes(msg[pos + 1 : pos + 3], "big")
    return ".".join(labels), qtype, pos + 5


def answer(msg):
    name, qtype, end = read_question(msg)
    header = bytearray(msg[:12])
    header[2] = 0x80 | (msg[2] & 0x01)
    header[6:12] = b"\0" * 6
    body = msg[12:end]
    if name not in NAMES:
        header[3] = 0x83  # NXDOMAIN
        return bytes(header) + body
    header[3] = 0x80
    if qtype != 1:
        return bytes(header) + body
    header[7] = 1
    rr = b"\xc0\x0c" + (1).to_bytes(2, "big") + (1).to_bytes(2, "big")
    rr += (60).to_bytes(4, "big") + (4).to_bytes(2, "big") + socket.inet_aton(NAMES[name])
    return bytes(header) + body + rr


def serve_dns():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("203.0.113.53", 53))
    ready.set()
    while True:
        msg, peer = sock.recvfrom(4096)
        try:
            sock.sendto(answer(msg), peer)
        except Exception:
            pass


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    root = sys.argv[1]
    build_index(root)
    build_npm_registry(root)
    os.chdir(root)
    ready = threading.Event()
    threading.Thread(target=serve_dns, daemon=True).start()
    httpd = Server(("0.0.0.0", 80), Quiet)
    ready.wait()
    print("ready", flush=True)
    httpd.serve_forever()
