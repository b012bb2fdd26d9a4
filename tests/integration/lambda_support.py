"""Lambda for the tests: the Runtime API a sandbox polls, and API Gateway's events.

:class:`RuntimeApi` serves ``/2018-06-01/runtime/invocation/next`` over loopback to the runtime
loop of ``tests/apps/lambda_runtime.py``: :meth:`RuntimeApi.invoke` hands it one event and
returns the handler's result once the runtime posts it, which is the moment a real invocation
returns (and Lambda may freeze the sandbox).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ARN = "arn:aws:lambda:eu-west-1:123456789012:function:beacon-test"


class RuntimeApi:
    """The Lambda Runtime API of one sandbox, on a loopback port."""

    def __init__(self) -> None:
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._results: dict[str, queue.Queue[tuple[str, Any]]] = {}
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                request_id, event = api._events.get()
                body = json.dumps(event).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30_000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", ARN)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                _, _, request_id, outcome = self.path.rsplit("/", 3)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                api._results[request_id].put((outcome, json.loads(body)))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def invoke(self, event: dict[str, Any], timeout: float = 60) -> tuple[str, Any]:
        """One invocation: ``("response", result)`` or ``("error", {...})`` once the handler returned."""
        request_id = str(uuid.uuid4())
        self._results[request_id] = queue.Queue()
        self._events.put((request_id, event))
        return self._results[request_id].get(timeout=timeout)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def http_api_event(method: str, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event, ``$default`` route."""
    lowered = {"host": "abc123.execute-api.eu-west-1.amazonaws.com", "user-agent": "tests"}
    lowered |= {k.lower(): v for k, v in (headers or {}).items()}
    now = int(time.time() * 1000)
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": lowered,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "tests",
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": "06/Dec/2026:03:00:00 +0000",
            "timeEpoch": now,
        },
        "isBase64Encoded": False,
    }


def rest_api_event(method: str, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway REST API proxy event (payload 1.0), a ``/{proxy+}`` resource, stage ``prod``."""
    full = {
        "Host": "abc123.execute-api.eu-west-1.amazonaws.com",
        "User-Agent": "tests",
        "X-Forwarded-Proto": "https",
        **(headers or {}),
    }
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": full,
        "multiValueHeaders": {k: [v] for k, v in full.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "httpMethod": method,
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "tests"},
            "path": f"/prod{path}",
            "protocol": "HTTP/1.1",
            "requestId": uuid.uuid4().hex,
            "requestTimeEpoch": int(time.time() * 1000),
            "resourceId": "abc",
            "resourcePath": "/{proxy+}",
            "stage": "prod",
        },
        "body": None,
        "isBase64Encoded": False,
    }
