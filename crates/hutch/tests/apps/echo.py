"""A small app for tests of ports reached from outside, with nothing but the standard library.

``python3 echo.py PORT [ADDRESS]`` listens on ADDRESS (default ``0.0.0.0``) and answers:

- a WebSocket upgrade on any path: echoes every text and binary message back, answers pings,
  and closes when the client does;
- ``GET`` on any other path: a JSON object of the request's ``method``, ``path`` and
  ``headers`` (names in lower case);
- ``POST`` or ``PUT``: the request body, as it came.
"""

import base64
import hashlib
import json
import socket
import socketserver
import struct
import sys

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            request_line = self.rfile.readline(65536).decode("latin-1").rstrip("\r\n")
            if not request_line:
                return
            method, path, _ = request_line.split(" ", 2)
            headers = {}
            while True:
                line = self.rfile.readline(65536).decode("latin-1").rstrip("\r\n")
                if not line:
                    break
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("upgrade", "").lower() == "websocket":
                self.websocket(headers)
                return
            if method in ("POST", "PUT"):
                body = self.read_body(headers)
                content_type = "application/octet-stream"
            else:
                body = json.dumps({"method": method, "path": path, "headers": headers}).encode()
                content_type = "application/json"
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                % (content_type.encode(), len(body))
            )
            self.wfile.write(body)
            self.wfile.flush()

    def read_body(self, headers):
        if "content-length" in headers:
            return self.rfile.read(int(headers["content-length"]))
        body = b""
        while headers.get("transfer-encoding", "").lower() == "chunked":
            size = int(self.rfile.readline().strip().split(b";")[0], 16)
            chunk = self.rfile.read(size + 2)[:size]
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                break
            body += chunk
        return body

    def websocket(self, headers):
        accept = base64.b64encode(
            hashlib.sha1(headers["sec-websocket-key"].encode() + WS_GUID).digest()
        )
        self.wfile.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self.rfile.read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self.rfile.read(8))
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 0x8:
                self.send_frame(0x8, payload[:2])
                return
            reply = 0xA if opcode == 0x9 else opcode
            self.send_frame(reply, payload)

    def send_frame(self, opcode, payload):
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, length)
        elif length < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, length)
        self.wfile.write(head + payload)
        self.wfile.flush()


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    port = int(sys.argv[1])
    address = sys.argv[2] if len(sys.argv) > 2 else "0.0.0.0"
    Server.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with Server((address, port), Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
