"""Finding scenes: a STAC API (pystac-client) or a static catalog, behind one function.

Servers disagree on how to filter by cloud cover: Earth Search speaks the ``query`` extension,
others CQL2 ``filter``, small servers neither (and some silently ignore what they do not know,
returning *nothing*). We therefore ask the server only for what its conformance classes promise,
and always re-check the cloud limit on our side, so a lax server can never let cloudy scenes in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pystac
from urllib3.util.retry import Retry

from earthloop.config import parse_datetime_interval
from earthloop.errors import EarthloopError
from earthloop.observe.logs import redact_url

log = logging.getLogger("earthloop.ingest")

CloudFilterMode = Literal["auto", "filter", "query", "client"]

_FILTER_CONFORMANCE = ("filter", "item-search#filter")
_QUERY_CONFORMANCE = ("item-search#query",)


class SearchError(EarthloopError, RuntimeError):
    """The catalogue could not be searched (unreachable, 5xx after retries, bad answer)."""


@dataclass(frozen=True)
class SearchRequest:
    collection: str
    bbox: tuple[float, float, float, float] | None
    intersects: dict[str, Any] | None
    datetime: str
    max_cloud: float


def item_datetime(item: pystac.Item) -> datetime:
    dt = item.datetime or item.common_metadata.start_datetime
    if dt is None:
        raise ValueError(f"item {item.id} has no datetime")
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _bbox_overlaps(a: list[float] | None, b: tuple[float, float, float, float] | None) -> bool:
    if a is None or b is None:
        return True
    return not (a[2] < b[0] or a[0] > b[2] or a[3] < b[1] or a[1] > b[3])


def matches(item: pystac.Item, req: SearchRequest) -> bool:
    """Client-side check of every criterion; applied to server results too."""
    if item.collection_id not in (None, req.collection):
        return False
    cloud = item.properties.get("eo:cloud_cover")
    if cloud is not None and float(cloud) > req.max_cloud:
        return False
    start, end = parse_datetime_interval(req.datetime)
    when = item_datetime(item)
    if (start and when < start) or (end and when > end):
        return False
    return _bbox_overlaps(item.bbox, req.bbox)


def _has_conformance(conforms: list[str], needles: tuple[str, ...]) -> bool:
    return any(c.rstrip("/").endswith(n) for c in conforms for n in needles)


class Catalogue:
    """A searchable source of items: a STAC API URL or a static catalog/collection file."""

    def __init__(
        self,
        source: str,
        *,
        timeout_s: float = 20.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        cloud_filter: CloudFilterMode = "auto",
    ) -> None:
        self.source = source
        self.cloud_filter = cloud_filter
        self.mode_used: str = ""
        self._client: Any = None
        self._static: pystac.Catalog | None = None
        if source.startswith(("http://", "https://")):
            from pystac_client import Client
            from pystac_client.stac_api_io import StacApiIO

            retry = Retry(
                total=max_retries,
                backoff_factor=backoff_s,
                status_forcelist=(500, 502, 503, 504),
                allowed_methods=None,  # POST searches too
                raise_on_status=True,
            )
            io = StacApiIO(timeout=timeout_s, max_retries=retry)
            try:
                self._client = Client.open(source, stac_io=io, timeout=timeout_s)
            except Exception as exc:  # connection refused, 5xx, not a STAC API …
                log.debug("opening %s failed", redact_url(source), exc_info=True)
                raise SearchError(
                    f"cannot open STAC API {redact_url(source)}: {_short(exc)}"
                ) from exc
        else:
            path = Path(source)
            if not path.exists():
                raise SearchError(f"static catalog not found: {source}")
            self._static = pystac.read_file(str(path))  # type: ignore[assignment]

    @property
    def conforms_to(self) -> list[str]:
        if self._client is None:
            return []
        return list(self._client.to_dict().get("conformsTo", []))

    def _server_cloud_mode(self) -> str:
        if self.cloud_filter != "auto":
            return self.cloud_filter
        conforms = self.conforms_to
        if _has_conformance(conforms, _FILTER_CONFORMANCE):
            return "filter"
        if _has_conformance(conforms, _QUERY_CONFORMANCE):
            return "query"
        return "client"

    def search(self, req: SearchRequest) -> Iterator[pystac.Item]:
        """Yield matching items; raises :class:`SearchError` when the server keeps failing."""
        if self._static is not None:
            self.mode_used = "static"
            for item in self._static.get_items(recursive=True):
                if matches(item, req):
                    yield item
            return
        mode = self._server_cloud_mode()
        self.mode_used = mode
        kwargs: dict[str, Any] = {
            "collections": [req.collection],
            "datetime": req.datetime,
            "limit": 100,
        }
        if req.intersects is not None:
            kwargs["intersects"] = req.intersects
        elif req.bbox is not None:
            kwargs["bbox"] = list(req.bbox)
        if mode == "filter":
            kwargs["filter"] = {
                "op": "<=",
                "args": [{"property": "eo:cloud_cover"}, req.max_cloud],
            }
            kwargs["filter_lang"] = "cql2-json"
        elif mode == "query":
            kwargs["query"] = {"eo:cloud_cover": {"lte": req.max_cloud}}
        try:
            search = self._client.search(**kwargs)
            for item in search.items():
                if matches(item, req):
                    yield item
        except Exception as exc:
            raise SearchError(f"search of {self.source} failed: {_short(exc)}") from exc


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 300 else text[:300] + "…"


def season_windows(datetime_range: str, n: int) -> list[str]:
    """Split ``start/end`` into ``n`` equal windows: one search (and one date) per season.

    Searching per window also isolates failures: a server error in one window costs that
    season's scenes, not the whole ingest.
    """
    start, end = parse_datetime_interval(datetime_range)
    if start is None or end is None:
        raise ValueError(f"datetime {datetime_range!r} must be a closed range start/end")
    if end <= start:
        raise ValueError(f"datetime {datetime_range!r}: end is not after start")
    step = (end - start) / n
    out = []
    for i in range(n):
        a = start + step * i
        b = start + step * (i + 1)
        out.append(f"{_iso(a)}/{_iso(b)}")
    return out


def _iso(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
