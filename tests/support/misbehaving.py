"""Ingests and networks that misbehave, on loopback: trickled replies, huge bodies, TLS, a proxy.

Each server reads one whole request per turn and answers it with a scripted behaviour; it
records what it saw (connections, requests, bytes it managed to write) for the tests to check.
"""

from __future__ import annotations

import gzip
import http.client
import json
import select
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

Behaviour = Callable[[socket.socket, "Misbehaving"], None]


class LoopbackListener:
    """A loopback port whose every connection goes to ``handle`` on a thread of its own.

    The accept loop wakes every 0.2 s to see ``stopping``; :meth:`close` sets it and waits.
    """

    def __init__(self, handle: Callable[[socket.socket], None], stopping: threading.Event) -> None:
        self._handle = handle
        self._stopping = stopping
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self.accepted = 0
        """Connections accepted so far (counted on the accept loop's one thread)."""
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(10)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()


@dataclass
class Misbehaving:
    """A loopback HTTP(S) server whose every answer is ``behaviour(connection, server)``."""

    behaviour: Behaviour
    tls: ssl.SSLContext | None = None
    requests: list[dict[str, str]] = field(default_factory=list)
    written: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)

    port: int = 0

    def start(self) -> Misbehaving:
        self._listener = LoopbackListener(self._serve, self.stopping)
        self.port = self._listener.port
        return self

    def stop(self) -> None:
        self._listener.close()

    @property
    def connections(self) -> int:
        return self._listener.accepted

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(30)
            reader = conn.makefile("rb")
            while not self.stopping.is_set():
                line = reader.readline()
                if not line:
                    return
                headers: dict[str, str] = {"request-line": line.decode().strip()}
                while (line := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                reader.read(int(headers.get("content-length", "0")))
                self.requests.append(headers)
                self.behaviour(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def write(self, conn: socket.socket, data: bytes) -> None:
        """Send ``data``, counting what got out (a client that hangs up raises here)."""
        conn.sendall(data)
        self.written += len(data)


@contextmanager
def misbehaving(behaviour: Behaviour, tls: ssl.SSLContext | None = None) -> Iterator[Misbehaving]:
    server = Misbehaving(behaviour, tls).start()
    try:
        yield server
    finally:
        server.stop()


def answer(status: int, body: bytes = b"", headers: str = "") -> Behaviour:
    """A well-behaved, keep-alive answer."""

    def behave(conn: socket.socket, server: Misbehaving) -> None:
        head = f"HTTP/1.1 {status} Status\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
        server.write(conn, head.encode() + body)

    return behave


def trickled_body(status: int, interval: float = 0.2, limit: float = 300.0) -> Behaviour:
    """Status and headers at once, then a body of one byte per ``interval``, for ``limit`` s."""

    def behave(conn: socket.socket, server: Misbehaving) -> None:
        server.write(conn, f"HTTP/1.1 {status} Status\r\nContent-Length: 100000\r\n\r\n".encode())
        trickle(conn, server, interval, limit)

    return behave


def trickled_headers(interval: float = 0.2, limit: float = 300.0) -> Behaviour:
    """A status line, then an endless header trickled one byte per ``interval``."""

    def behave(conn: socket.socket, server: Misbehaving) -> None:
        server.write(conn, b"HTTP/1.1 202 Accepted\r\nX-Slow: ")
        trickle(conn, server, interval, limit)

    return behave


def trickle(conn: socket.socket, server: Misbehaving, interval: float, limit: float) -> None:
    ends = time.monotonic() + limit
    while time.monotonic() < ends and not server.stopping.is_set():
        server.write(conn, b"a")
        time.sleep(interval)


def huge_body(status: int, size: int) -> Behaviour:
    """A reply of ``size`` bytes, written as fast as the client takes them."""

    def behave(conn: socket.socket, server: Misbehaving) -> None:
        server.write(conn, f"HTTP/1.1 {status} Status\r\nContent-Length: {size}\r\n\r\n".encode())
        chunk = b"x" * 65536
        left = size
        while left > 0:
            piece = chunk[: min(left, len(chunk))]
            server.write(conn, piece)
            left -= len(piece)

    return behave


@dataclass
class Certificate:
    """A self-signed certificate (its own CA) for the given names, as files."""

    cert: Path
    key: Path
    directory: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_certificate(directory: Path, names: list[str]) -> Certificate:
    """``openssl req -x509`` for ``names`` (DNS names and IP addresses), plus a hashed CA dir."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    alt = ",".join(f"IP:{n}" if n.replace(".", "").isdigit() else f"DNS:{n}" for n in names)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={names[0]}",
         "-addext", f"subjectAltName={alt}", "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True,
    )  # fmt: skip
    hashed = directory / "ca-dir"
    hashed.mkdir(exist_ok=True)
    subject_hash = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(cert)], check=True, capture_output=True, text=True
    ).stdout.strip()
    (hashed / f"{subject_hash}.0").write_bytes(cert.read_bytes())
    return Certificate(cert, key, hashed)


class ConnectProxy:
    """An HTTP CONNECT proxy that resolves names from its own table (the local resolver can't)."""

    def __init__(self, names: dict[str, tuple[str, int]]) -> None:
        self.names = names
        self.tunnels: list[str] = []
        self._stopping = threading.Event()
        self._listener = LoopbackListener(self._tunnel, self._stopping)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.port}"

    def close(self) -> None:
        self._listener.close()

    def _tunnel(self, client: socket.socket) -> None:
        with client:
            reader = client.makefile("rb")
            request_line = reader.readline().decode().strip()
            while reader.readline() not in (b"\r\n", b""):
                pass
            method, target, _ = request_line.split(" ", 2)
            host, _, _port = target.rpartition(":")
            self.tunnels.append(target)
            address = self.names.get(host)
            if method != "CONNECT" or address is None:
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            with socket.create_connection(address) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                pipe(client, upstream, self._stopping)


def pipe(a: socket.socket, b: socket.socket, stopping: threading.Event) -> None:
    """Copy bytes both ways until either side closes."""
    while not stopping.is_set():
        readable, _, _ = select.select([a, b], [], [], 0.2)
        for source in readable:
            data = source.recv(65536)
            if not data:
                return
            (b if source is a else a).sendall(data)


@dataclass
class Post:
    """One ingest POST as the front saw it, and what it answered."""

    mode: str
    events: list[dict[str, object]]
    status: int | None
    at: float


class IngestFront:
    """An HTTP front for a real ingest that misbehaves on command, recording every POST.

    ``mode`` decides each answer as the request arrives: ``"pass"`` forwards it to the ingest on
    ``upstream`` and relays the answer; ``"fail"`` answers 503; ``"hang"`` keeps the request
    unanswered until the mode changes, then drops the connection; ``"limit"`` answers 413 to a
    body of more than ``limit`` events and forwards the others.
    """

    def __init__(self, upstream: int, mode: str = "pass", limit: int = 0) -> None:
        self.upstream = upstream
        self.mode = mode
        self.limit = limit
        self.posts: list[Post] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = LoopbackListener(self._serve, self._stopping)
        self.port = self._listener.port
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._listener.close()

    def seen(self) -> list[Post]:
        with self._lock:
            return list(self.posts)

    def _serve(self, conn: socket.socket) -> None:
        upstream: http.client.HTTPConnection | None = None
        try:
            conn.settimeout(120)
            reader = conn.makefile("rb")
            while not self._stopping.is_set():
                request_line = reader.readline()
                if not request_line:
                    return
                headers: dict[str, str] = {}
                while (line := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip()] = value.strip()
                length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), "0"))
                body = reader.read(length)
                mode = self.mode
                post = Post(mode, _events_of(body, headers), None, time.monotonic())
                with self._lock:
                    self.posts.append(post)
                if mode == "hang":
                    while self.mode == "hang" and not self._stopping.wait(0.05):
                        pass
                    return  # no answer at all: the client sees its connection dropped
                if mode == "fail" or (mode == "limit" and len(post.events) > self.limit):
                    post.status = 503 if mode == "fail" else 413
                    reply = b'{"error": "front"}'
                    head = f"HTTP/1.1 {post.status} Front\r\nContent-Length: {len(reply)}\r\n\r\n"
                    conn.sendall(head.encode() + reply)
                    continue
                if upstream is None:
                    upstream = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=60)
                method, target, _ = request_line.decode("latin-1").split(" ", 2)
                forwarded = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(method, target, body=body, headers=forwarded)
                response = upstream.getresponse()
                answer = response.read()
                post.status = response.status
                head = f"HTTP/1.1 {response.status} Relayed\r\nContent-Length: {len(answer)}\r\n"
                relayed = [(k, v) for k, v in response.getheaders() if k.lower() == "retry-after"]
                head += "".join(f"{k}: {v}\r\n" for k, v in relayed)
                conn.sendall(head.encode() + b"\r\n" + answer)
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
            if upstream is not None:
                upstream.close()


def _events_of(body: bytes, headers: dict[str, str]) -> list[dict[str, object]]:
    """The events of an ingest request body (gzip or not); none when it is not a batch."""
    try:
        if any(k.lower() == "content-encoding" and "gzip" in v for k, v in headers.items()):
            body = gzip.decompress(body)
        events = json.loads(body)["events"]
    except (ValueError, KeyError, TypeError, OSError):
        return []
    return events if isinstance(events, list) else []


@contextmanager
def ingest_front(upstream: int, mode: str = "pass") -> Iterator[IngestFront]:
    front = IngestFront(upstream, mode)
    try:
        yield front
    finally:
        front.close()
