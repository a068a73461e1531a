"""The lean HTTP/1.1 client's request encoding and response parser, byte by byte, and its
kept connections against a real socket server that closes them."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Iterator, List, Tuple

import pytest

from hutch._wire import (
    AsyncLane,
    Head,
    Lane,
    LineSplitter,
    ResponseParser,
    WireError,
    encode_request,
)


def parse(method: str, raw: bytes, step: int) -> Tuple[ResponseParser, bytes]:
    """Feeds ``raw`` ``step`` bytes at a time; returns the parser and the body."""
    parser = ResponseParser(method)
    body = b""
    for i in range(0, len(raw), step):
        parser.feed(raw[i : i + step])
        body += parser.take_body()
    return parser, body


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_a_chunked_answer_is_read_whatever_the_reads_split(step: int) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1a\r\n" + b"x" * 26 + b"\r\n0\r\nTrailer: t\r\n\r\n"
    )
    parser, body = parse("POST", raw, step)
    assert parser.head == Head(200, {"content-type": "application/x-ndjson", "transfer-encoding": "chunked"})
    assert body == b"hello" + b"x" * 26
    assert parser.done and parser.reusable


@pytest.mark.parametrize("step", [1, 5, 1000])
def test_a_content_length_answer_ends_at_its_length(step: int) -> None:
    parser, body = parse("GET", b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\n{}\r\n", step)
    assert parser.head is not None and parser.head.status == 404
    assert body == b"{}\r\n" and parser.done and parser.reusable


def test_an_interim_answer_is_skipped_and_no_body_answers_end_at_once() -> None:
    parser, body = parse("POST", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 1000)
    assert parser.head is not None and parser.head.status == 204
    assert body == b"" and parser.done and parser.reusable
    parser, _ = parse("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 1000)
    assert parser.done


def test_an_answer_without_length_lasts_until_close_and_is_not_kept() -> None:
    parser, body = parse("GET", b"HTTP/1.1 200 OK\r\n\r\nabc", 2)
    assert not parser.done and body == b"abc"
    parser.feed(b"")
    assert parser.done and not parser.reusable
    closing, _ = parse("GET", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 1000)
    assert closing.done and not closing.reusable


def test_a_cut_or_foreign_answer_is_an_error() -> None:
    parser, _ = parse("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 1000)
    with pytest.raises(WireError) as cut:
        parser.feed(b"")
    assert cut.value.answered
    with pytest.raises(WireError) as silent:
        ResponseParser("GET").feed(b"")
    assert not silent.value.answered
    for bad in (b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"):
        with pytest.raises(WireError):
            ResponseParser("GET").feed(bad)
    with pytest.raises(WireError, match="too long"):
        ResponseParser("GET").feed(b"HTTP/1.1 200 OK\r\n" + b"a" * 70000)


def test_a_request_is_one_buffer_with_its_length() -> None:
    raw = encode_request("POST", "/v1/x?a=1", "h:1", {"Authorization": "Bearer t"}, b'{"a":1}')
    assert raw == (
        b"POST /v1/x?a=1 HTTP/1.1\r\nHost: h:1\r\nAuthorization: Bearer t\r\nContent-Length: 7\r\n\r\n"
        b'{"a":1}'
    )
    assert b"Content-Length: 0" in encode_request("POST", "/", "h", {}, None)
    assert b"Content-Length" not in encode_request("GET", "/", "h", {}, None)


def test_lines_are_split_across_reads() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b'{"a"') == []
    assert splitter.feed(b':1}\n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert splitter.finish() == [b'{"c"']
    assert splitter.finish() == []


class OneAnswerServer:
    """A loopback server that answers each request on a connection with ``answers`` in turn
    and then closes the connection; counts the connections it accepted."""

    def __init__(self, answers: List[bytes]) -> None:
        self.answers = answers
        self.accepted = 0
        self.stopped = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.stopped:
                conn.close()
                return
            self.accepted += 1
            with conn:
                for answer in self.answers:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        got = conn.recv(4096)
                        if not got:
                            break
                        data += got
                    conn.sendall(answer)

    def close(self) -> None:
        self.stopped = True
        socket.create_connection(("127.0.0.1", self.port), timeout=10).close()  # wakes accept()
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def closing_server() -> Iterator[OneAnswerServer]:
    server = OneAnswerServer([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    yield server
    server.close()


def exchange(lane: Lane) -> Tuple[int, bytes]:
    parts = list(lane.exchange("GET", "/", {}, None, 10, 10, retries=1))
    head = parts[0]
    assert isinstance(head, Head)
    return head.status, b"".join(p for p in parts[1:] if isinstance(p, bytes))


def test_a_kept_connection_the_server_closed_is_replaced(closing_server: OneAnswerServer) -> None:
    lane = Lane("127.0.0.1", closing_server.port, "h")
    try:
        for _ in range(3):
            assert exchange(lane) == (200, b"ok")
        # Each answer came on a fresh connection: the closed ones were dropped, not reused.
        assert closing_server.accepted == 3
    finally:
        lane.close()


def test_the_event_loop_lane_drops_closed_connections_too(closing_server: OneAnswerServer) -> None:
    async def run() -> List[bytes]:
        lane = AsyncLane("127.0.0.1", closing_server.port, "h", max_connections=4)
        bodies = []
        for _ in range(3):
            body = b""
            async for part in lane.exchange("GET", "/", {}, None, 10, 10, retries=1):
                if isinstance(part, bytes):
                    body += part
            bodies.append(body)
            await asyncio.sleep(0)  # lets the loop see the server's end of file
        await lane.close()
        return bodies

    assert asyncio.run(run()) == [b"ok"] * 3
    assert closing_server.accepted == 3


def test_a_refused_connection_is_a_wire_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    lane = Lane("127.0.0.1", port, "h")
    with pytest.raises(WireError, match="connecting"):
        exchange(lane)


def test_only_direct_plain_http_takes_the_lean_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from hutch._http import AsyncTransport, Transport

    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert Transport("http://127.0.0.1:1", "t")._lane is not None
    assert AsyncTransport("http://127.0.0.1:1", "t")._lane is not None
    assert Transport("https://127.0.0.1:1", "t")._lane is None
    monkeypatch.setenv("HTTP_PROXY", "http://198.51.100.1:3128")
    assert Transport("http://203.0.113.5:1", "t")._lane is None
    monkeypatch.setenv("NO_PROXY", "203.0.113.5")
    assert Transport("http://203.0.113.5:1", "t")._lane is not None
