"""Ingest fixtures: the real Earth Search items as a STAC API, and a fault-injecting proxy.

Used by test_pipeline_real.py (they moved here with it from tests/ingest/); the STAC server
itself (``stac_server``) comes from the root conftest.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pystac
import pytest
import requests


def export_static_catalog(
    catalog: Path, out: Path, mutate: Callable[[dict], Any] | None = None
) -> Path:
    """Write collection.json + items.ndjson (absolute asset hrefs) for a STAC API server."""
    out.mkdir(parents=True, exist_ok=True)
    cat = pystac.read_file(str(catalog))
    coll = next(cat.get_children())
    items = []
    for item in cat.get_items(recursive=True):
        item.make_asset_hrefs_absolute()
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        d["links"] = []
        if mutate is not None:
            mutate(d)
        items.append(d)
    cd = coll.to_dict(include_self_link=False, transform_hrefs=False)
    cd["links"] = []
    (out / "collection.json").write_text(json.dumps(cd))
    (out / "items.ndjson").write_text("\n".join(json.dumps(i) for i in items) + "\n")
    return out


@pytest.fixture
def real_static_catalog(shared_data: Path) -> Path:
    return shared_data / "sentinel2-l2a" / "earth-search-static" / "catalog.json"


class FaultProxy:
    """Forwards to a real STAC API but answers 503 to searches matching ``fail_when``.

    The only fake server we allow: it injects faults into traffic to a real one.
    """

    def __init__(self, upstream: str, fail_when: Callable[[dict[str, Any]], bool]) -> None:
        self.upstream = upstream
        self.fail_when = fail_when
        self.failed = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _forward(self, method: str, body: bytes | None) -> None:
                url = proxy.upstream + self.path
                r = requests.request(
                    method, url, data=body, headers={"Content-Type": "application/json"}, timeout=10
                )
                text = r.content.replace(proxy.upstream.encode(), proxy.url.encode())
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def do_GET(self) -> None:
                self._forward("GET", None)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.startswith("/search") and proxy.fail_when(json.loads(body or b"{}")):
                    proxy.failed += 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._forward("POST", body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[str, Callable[[dict[str, Any]], bool]], FaultProxy]]:
    made: list[FaultProxy] = []

    def make(upstream: str, fail_when: Callable[[dict[str, Any]], bool]) -> FaultProxy:
        p = FaultProxy(upstream, fail_when)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def export_catalog() -> Callable[..., Path]:
    return export_static_catalog
