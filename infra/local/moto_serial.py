"""moto's S3/DynamoDB server with one request at a time: the local stand-in for an object store.

Run with the moto venv's Python: ``python moto_serial.py HOST PORT``.

Why not plain ``moto_server``: moto honours ``If-None-Match: *`` on PUT (the conditional write
Delta relies on for safe concurrent commits on S3), but it checks "does the key exist?" and then
stores the object without a lock, while its server handles requests on many threads. Two writers
of the same Delta log version could both pass the check; real S3 and MinIO make that check
atomic. Serialising requests restores that guarantee. Throughput does not matter for a loopback
test server.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def serialised(app: Callable[..., Iterable[bytes]]) -> Callable[..., list[bytes]]:
    lock = threading.Lock()

    def handle(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with lock:  # the whole request, body included, so check-then-write is atomic
            return list(app(environ, start_response))

    return handle


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    if host not in {"127.0.0.1", "localhost", "::1"}:
        sys.exit(f"refusing to bind {host}: this unauthenticated stand-in is for loopback only")
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, serialised(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
