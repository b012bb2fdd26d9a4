"""A Lambda runtime for the tests: the Runtime API loop AWS's runtime client runs, in one process.

``python lambda_runtime.py`` (under ``opentelemetry-instrument``, as AWS's OpenTelemetry layer
runs it) imports the handler named by ``_HANDLER`` after the instrumentations patched it, then
asks ``http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/invocation/next`` for each invocation,
calls the handler with the event and a context object, and posts its result back, exactly as
the real runtime interface client does. The test serving that API decides when to freeze
(SIGSTOP) or kill (SIGKILL) the process between invocations, as Lambda does to a sandbox.
"""

from __future__ import annotations

import http.client
import importlib
import json
import os
import time
from typing import Any

API = "/2018-06-01/runtime"


class LambdaContext:
    """What the runtime hands the handler next to the event."""

    def __init__(self, request_id: str, deadline_ms: int, arn: str) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = arn
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = "128"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "test"
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def handler() -> Any:
    module_name, _, function = os.environ["_HANDLER"].replace("/", ".").rpartition(".")
    return getattr(importlib.import_module(module_name), function)


def main() -> None:
    host, _, port = os.environ["AWS_LAMBDA_RUNTIME_API"].partition(":")
    call = handler()
    while True:
        connection = http.client.HTTPConnection(host, int(port), timeout=None)
        connection.request("GET", f"{API}/invocation/next")
        answer = connection.getresponse()
        event = json.loads(answer.read())
        request_id = answer.headers["Lambda-Runtime-Aws-Request-Id"]
        context = LambdaContext(
            request_id,
            int(answer.headers["Lambda-Runtime-Deadline-Ms"]),
            answer.headers["Lambda-Runtime-Invoked-Function-Arn"],
        )
        try:
            result, outcome = call(event, context), "response"
        except Exception as exc:  # the runtime reports a failed invocation, and goes on
            result, outcome = {"errorType": type(exc).__name__, "errorMessage": str(exc)}, "error"
        connection.request("POST", f"{API}/invocation/{request_id}/{outcome}", body=json.dumps(result))
        connection.getresponse().read()
        connection.close()


if __name__ == "__main__":
    main()
