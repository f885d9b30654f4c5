"""COGs over HTTP(S): GDAL's /vsicurl/ settings earthloop applies, and URLs safe to log.

Earth Search serves Sentinel-2 L2A COGs from public HTTPS URLs; Planetary Computer serves them
from Azure Blob Storage with a SAS token in the query string. Over a network every range request
costs a round trip, so what decides throughput is how many requests a read issues and whether
they wait for each other, not decode. The settings below (all documented GDAL configuration
options, GDAL ≥ 3.6; rasterio 1.4.4 ships 3.10.3) cut the requests per read:

* ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``: no directory listing (an extra request, and S3 or
  Azure answer it slowly) looking for sidecar files a COG does not have. Remote opens only:
  local JPEG2000 files of the test catalog keep their georeferencing in ``.aux.xml`` sidecars.
* ``CPL_VSIL_CURL_ALLOWED_EXTENSIONS``: never probe for ``.ovr``/``.msk``/``.aux.xml`` siblings.
* ``GDAL_INGESTED_BYTES_AT_OPEN``: that first GET fetches the whole COG header (IFDs and tile
  offset arrays of every overview) instead of 16 KB and then more.
* ``GDAL_HTTP_MULTIRANGE=YES`` + ``GDAL_HTTP_MERGE_CONSECUTIVE_RANGES=YES``: a window that spans
  several tiles is fetched with parallel requests, adjacent tiles in one.
* ``GDAL_HTTP_VERSION=2TLS`` + ``GDAL_HTTP_MULTIPLEX=YES``: HTTP/2 multiplexing on HTTPS where
  the server offers it (plain HTTP stays 1.1).
* ``VSI_CACHE`` / ``VSI_CACHE_SIZE`` (per open file) and ``CPL_VSIL_CURL_CACHE_SIZE`` (one LRU
  per process): bytes already downloaded are never requested again while cached.
* ``GDAL_HTTP_TIMEOUT``, ``GDAL_HTTP_CONNECTTIMEOUT``, ``GDAL_HTTP_MAX_RETRY``,
  ``GDAL_HTTP_RETRY_DELAY``: a stalled server fails a read (counted per chip) instead of hanging
  a Ray task; 429/5xx answers are retried (GDAL's default is no retry and no timeout).

Not set: ``CPL_VSIL_CURL_USE_HEAD=NO``. Measured here (nginx access log), GDAL then replaces the
HEAD that finds the file size by a GET without a range, which the server starts sending in full
before GDAL hangs up: the same round trip, more bytes.

How they are applied: as environment variables of the process, each only where the
environment does not set it already (a user's value always wins), by :func:`apply_defaults`.
Not through ``rasterio.Env``: its options are process-global GDAL configuration that the first
thread to leave its ``Env`` clears for every thread, so the reader threads of
``read_windows`` would lose them mid-read. GDAL reads environment variables on every request.
Credentials (``GDAL_HTTP_HEADERS``, ``GDAL_HTTP_USERPWD``, tokens in URLs) are the user's to
set; earthloop never sets them and never logs a URL's query string or user info.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

#: hrefs GDAL reads through a network virtual file system (rasterio maps the schemes).
REMOTE_PREFIXES = ("http://", "https://", "s3://", "gs://", "az://", "/vsi")
HTTP_PREFIXES = ("http://", "https://")

#: Defaults for every read (merged into ``gdal_env``); the environment overrides each one.
REMOTE_DEFAULTS: dict[str, str] = {
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2",
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_VERSION": "2TLS",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(8 * 1024 * 1024),
    "CPL_VSIL_CURL_CACHE_SIZE": str(128 * 1024 * 1024),
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_CONNECTTIMEOUT": "15",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
}

#: Only while opening a remote file (see the module docstring).
REMOTE_OPEN_OPTIONS: dict[str, str] = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}

#: Remote range requests in flight per process (threads of ``read_windows``); 1 = one at a time.
READ_THREADS_ENV = "EARTHLOOP_REMOTE_READ_THREADS"
DEFAULT_READ_THREADS = 16


def is_remote(href: str) -> bool:
    """True for hrefs read over a network (every request pays a round trip)."""
    return href.startswith(REMOTE_PREFIXES)


def gdal_path(href: str) -> str:
    """The path GDAL opens: ``/vsicurl/`` for HTTP(S) URLs, anything else unchanged.

    Explicit rather than left to rasterio's scheme parsing, so what is opened is what the
    settings above are documented for, whatever rasterio's URL handling does.
    """
    if href.startswith(HTTP_PREFIXES):
        return "/vsicurl/" + href
    return href


def remote_options() -> dict[str, str]:
    """:data:`REMOTE_DEFAULTS`, each replaced by the environment's value where one is set."""
    return {k: os.environ.get(k, v) for k, v in REMOTE_DEFAULTS.items()}


def apply_defaults() -> None:
    """Put :data:`REMOTE_DEFAULTS` into this process's environment where unset (idempotent)."""
    for key, value in REMOTE_DEFAULTS.items():
        if key not in os.environ:
            os.environ[key] = value


def open_options() -> dict[str, str]:
    """:data:`REMOTE_OPEN_OPTIONS`, each replaced by the environment's value where one is set."""
    return {k: os.environ.get(k, v) for k, v in REMOTE_OPEN_OPTIONS.items()}


def read_threads() -> int:
    """Remote-read threads per process (``EARTHLOOP_REMOTE_READ_THREADS``, default 16).

    Raises:
        ValueError: the variable is set to something other than a positive integer.
    """
    raw = os.environ.get(READ_THREADS_ENV, str(DEFAULT_READ_THREADS))
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{READ_THREADS_ENV} must be a positive integer, got {raw!r}")
    return n


_URL = re.compile(r"(?:/vsicurl/)?(?:https?|s3|gs|az)://[^\s'\"<>)]+")


def _redact_url(url: str) -> str:
    prefix = ""
    if url.startswith("/vsicurl/"):
        prefix, url = "/vsicurl/", url[len("/vsicurl/") :]
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]  # user:password@host → host
    query = "<redacted>" if parts.query else ""
    return prefix + urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact(text: str) -> str:
    """``text`` with every URL's credentials removed: ``user:password@`` and the query string
    (a Planetary Computer SAS token or an S3 presigned signature lives there); the host and
    path, which say which file failed, stay."""
    return _URL.sub(lambda m: _redact_url(m.group(0)), text)
