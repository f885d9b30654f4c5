"""One filesystem view of a URI for code that is not Delta: Ray Train/Tune storage, reports.

Ray's ``RunConfig(storage_path=..., storage_filesystem=...)`` and pyarrow datasets need a
``pyarrow.fs.FileSystem``. Built here from the same environment variables as the Delta options
(:func:`earthloop.store.delta.storage_options`), so checkpoints and tables reach the same
endpoint with the same credentials, and neither ever comes from a config file.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import pyarrow.fs as pafs

_TRUE = {"1", "true", "yes"}


def pyarrow_filesystem(uri: str, *, create_bucket: bool = False) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path inside it)`` for a local path or an ``s3://`` URI.

    For S3 the endpoint comes from ``AWS_ENDPOINT_URL`` (``http://`` needs ``AWS_ALLOW_HTTP``,
    as for Delta) and the credentials from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
    (``AWS_SESSION_TOKEN``), else the SDK's usual chain. ``create_bucket`` lets a local test
    server's bucket be made on first use; never needed on a real account.
    """
    if not uri.startswith(("s3://", "s3a://")):
        if "://" in uri and not uri.startswith("file://"):
            raise ValueError(f"unsupported storage URI {uri!r}: use a local path or s3://")
        path = uri.removeprefix("file://")
        return pafs.LocalFileSystem(), os.path.abspath(path)
    parsed = urlparse(uri)
    kwargs: dict[str, object] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        ep = urlparse(endpoint)
        if ep.scheme == "http" and os.environ.get("AWS_ALLOW_HTTP", "").lower() not in _TRUE:
            raise ValueError(
                f"AWS_ENDPOINT_URL is plain http ({ep.netloc}); set AWS_ALLOW_HTTP=true to allow "
                "unencrypted traffic (a local test server), or use https"
            )
        kwargs["endpoint_override"] = ep.netloc
        kwargs["scheme"] = ep.scheme or "https"
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        kwargs["secret_key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    if os.environ.get("AWS_REGION"):
        kwargs["region"] = os.environ["AWS_REGION"]
    fs = pafs.S3FileSystem(allow_bucket_creation=create_bucket, **kwargs)
    path = f"{parsed.netloc}{parsed.path}".rstrip("/")
    if create_bucket:
        fs.create_dir(parsed.netloc)
    return fs, path
