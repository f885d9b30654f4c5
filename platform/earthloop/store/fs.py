"""One filesystem view of a URI for code that is not Delta: Ray Train/Tune storage, reports.

Ray's ``RunConfig(storage_path=..., storage_filesystem=...)`` and pyarrow datasets need a
``pyarrow.fs.FileSystem``. Built here from the same environment variables as the Delta options
(:func:`earthloop.store.delta.storage_options`), so checkpoints and tables reach the same
endpoint with the same credentials, and neither ever comes from a config file.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import pyarrow.fs as pafs

_TRUE = {"1", "true", "yes"}


def pyarrow_filesystem(uri: str, *, create_bucket: bool = False) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path inside it)`` for a local path or an ``s3://`` URI.

    For S3 the endpoint comes from ``AWS_ENDPOINT_URL`` (``http://`` needs ``AWS_ALLOW_HTTP``,
    as for Delta) and the credentials from the SDK's usual chain, which starts with
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``) in the environment
    of the process that uses it (so Ray workers need them in their environment too). ``create_bucket`` lets a local test
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
    # No access_key/secret_key arguments: the AWS SDK's default chain reads AWS_ACCESS_KEY_ID /
    # AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN from the environment of whichever process uses
    # the filesystem. Explicit keys would be pickled with it, and Ray pickles the storage
    # filesystem to every worker and into Tune's ``tuner.pkl`` on the storage itself.
    if os.environ.get("AWS_REGION"):
        kwargs["region"] = os.environ["AWS_REGION"]
    fs = pafs.S3FileSystem(allow_bucket_creation=create_bucket, **kwargs)
    path = f"{parsed.netloc}{parsed.path}".rstrip("/")
    if create_bucket:
        fs.create_dir(parsed.netloc)
    return fs, path


def is_remote(uri: str) -> bool:
    """True for ``s3://`` (any ``scheme://`` but ``file://``): not reachable with ``open()``."""
    return "://" in uri and not uri.startswith("file://")


def ray_storage(uri: str) -> tuple[str, pafs.FileSystem | None]:
    """``(storage_path, storage_filesystem)`` for Ray Train/Tune ``RunConfig`` and restore.

    A local path stays a plain path with no filesystem (Ray's own default, unchanged); an
    ``s3://`` URI becomes the path inside our S3 filesystem, because Ray's own URI resolution
    would not apply ``AWS_ALLOW_HTTP`` and the endpoint the same way Delta does.
    """
    if not is_remote(uri):
        return os.path.abspath(uri.removeprefix("file://")), None
    fs, path = pyarrow_filesystem(uri)
    return path, fs


def as_uri(filesystem: pafs.FileSystem | None, path: str) -> str:
    """A path on ``filesystem`` (as Ray reports checkpoint paths) as a URI users can pass back."""
    if isinstance(filesystem, pafs.S3FileSystem) and "://" not in path:
        return f"s3://{path.lstrip('/')}"
    return path


def exists(uri: str) -> bool:
    if not is_remote(uri):
        return os.path.exists(uri)
    fs, path = pyarrow_filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_bytes(uri: str) -> bytes:
    """The whole object/file at ``uri``; ``FileNotFoundError`` when there is none."""
    if not is_remote(uri):
        with open(uri, "rb") as fh:
            return fh.read()
    fs, path = pyarrow_filesystem(uri)
    with fs.open_input_stream(path) as fh:
        return bytes(fh.read())


def write_bytes(uri: str, data: bytes) -> None:
    """Replace ``uri`` with ``data`` in one step: readers see the old or the new content.

    Locally through a temporary file and ``os.replace``; on S3 a single PUT is already atomic.
    """
    if is_remote(uri):
        fs, path = pyarrow_filesystem(uri)
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    parent = os.path.dirname(os.path.abspath(uri))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(uri) + ".", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, uri)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def append_line(uri: str, line: str) -> None:
    """Append one line to a small log file.

    S3 has no append: the object is read and rewritten, which is only correct with one writer
    per file (earthloop's attempt logs have one per trial).
    """
    text = line.rstrip("\n") + "\n"
    if not is_remote(uri):
        os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
        with open(uri, "a") as fh:
            fh.write(text)
        return
    try:
        old = read_bytes(uri)
    except FileNotFoundError:
        old = b""
    write_bytes(uri, old + text.encode())


def upload_dir(local_dir: str, uri: str) -> list[str]:
    """Copy every file under ``local_dir`` to ``uri`` (same relative names); returns their URIs."""
    out = []
    for base, _, files in os.walk(local_dir):
        for name in sorted(files):
            src = os.path.join(base, name)
            rel = os.path.relpath(src, local_dir).replace(os.sep, "/")
            dest = posixpath.join(uri, rel)
            with open(src, "rb") as fh:
                write_bytes(dest, fh.read())
            out.append(dest)
    return out


@contextmanager
def local_staging(uri: str) -> Iterator[str]:
    """A local directory standing for ``uri``: the directory itself when local, else a
    temporary one uploaded to ``uri`` when the block ends without an error.

    For writers that only know ``open()`` (matplotlib, ``torch.save`` with an atomic rename).
    """
    if not is_remote(uri):
        os.makedirs(uri, exist_ok=True)
        yield uri
        return
    tmp = tempfile.mkdtemp(prefix="earthloop-stage-")
    try:
        yield tmp
        upload_dir(tmp, uri)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def staged_path(local_file: str, local_dir: str, target: str) -> str:
    """Where ``local_file`` (written under :func:`local_staging`'s ``local_dir``) ends up."""
    if not is_remote(target):
        return local_file
    rel = os.path.relpath(local_file, local_dir).replace(os.sep, "/")
    return posixpath.join(target, rel)
