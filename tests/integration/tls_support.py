"""TLS on loopback for the tests: a self-signed certificate and a TLS front for a plain server.

The certificate is made by the ``openssl`` command for ``127.0.0.1`` and ``localhost``; it is its
own CA, handed to clients through ``REQUESTS_CA_BUNDLE`` (the setting beacon-otel and requests
both read). :class:`TlsFront` accepts TLS on a free loopback port and relays the plain bytes to a
loopback server (the dev ingest, or :class:`PlainAnswer`), so every server stays unchanged.
"""

from __future__ import annotations

import contextlib
import http.server
import selectors
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""

    cert: Path
    key: Path


def self_signed(directory: Path) -> Certificate:
    """A fresh certificate in ``directory``, valid for a day."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=beacon-otel test",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return Certificate(cert, key)


class TlsFront:
    """TLS on a free loopback port, relayed in clear to ``127.0.0.1:backend_port``."""

    def __init__(self, certificate: Certificate, backend_port: int) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certificate.cert, certificate.key)
        self._backend_port = backend_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="tls-front", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> TlsFront:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(10)
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            client.settimeout(30)
            secure = self._context.wrap_socket(client, server_side=True)
            backend = socket.create_connection(("127.0.0.1", self._backend_port), timeout=30)
        except OSError:
            client.close()
            return
        with self._lock:
            self._open.update((secure, backend))
        try:
            _pump(secure, backend)
        finally:
            with self._lock:
                self._open.difference_update((secure, backend))
            for sock in (secure, backend):
                with contextlib.suppress(OSError):
                    sock.close()


def _pump(secure: ssl.SSLSocket, backend: socket.socket) -> None:
    """Bytes both ways until either side closes."""
    other = {secure: backend, backend: secure}
    with selectors.DefaultSelector() as selector:
        selector.register(secure, selectors.EVENT_READ)
        selector.register(backend, selectors.EVENT_READ)
        while True:
            # A TLS record already decrypted sits in the SSL object, not in the socket.
            ready = [secure] if secure.pending() else [key.fileobj for key, _ in selector.select(30)]
            if not ready:
                return
            for sock in ready:
                try:
                    data = sock.recv(65536)  # type: ignore[union-attr]
                except (OSError, ssl.SSLError):
                    return
                if not data:
                    return
                other[sock].sendall(data)  # type: ignore[index]


class PlainAnswer:
    """A plain HTTP server on loopback answering every GET with 200 ``pong`` (put TLS in front)."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "4")
                self.end_headers()
                self.wfile.write(b"pong")

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> PlainAnswer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
