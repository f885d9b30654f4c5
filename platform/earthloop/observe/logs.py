"""Logging setup with secret redaction ("no secret in logs").

Why redact at the handler: job logs end up in Ray's job logs, CI output and bug reports. The
Label Studio token, Ray's auth token and cloud keys live in environment variables and pass
through HTTP headers, so one careless ``log.debug(headers)`` or an exception message quoting a
URL would leak them. A filter on the handler sees every record that reaches it, including those
propagated from child loggers and third-party libraries (a filter on a logger would not).

What is masked (replaced with ``***``):

* the values of environment variables whose names contain TOKEN, SECRET, PASSWORD, PASSWD or KEY
  (values shorter than :data:`MIN_SECRET_LENGTH` or boolean-like are left alone: masking every
  "1" or "true" in the logs would make them unreadable and protect nothing);
* ``Authorization:`` / ``Proxy-Authorization:`` header values and ``Bearer <token>``;
* ``name=value`` / ``name: value`` pairs whose name looks secret (``api_key=...``,
  ``password: ...``, ``X-Auth-Token: ...``);
* passwords in URLs (``https://user:pw@host``).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "DEFAULT_FORMAT",
    "MIN_SECRET_LENGTH",
    "RedactingFilter",
    "SecretRedactor",
    "secret_env_values",
    "redact_url",
    "setup_logging",
]

DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"
MIN_SECRET_LENGTH = 6
MASK = "***"

_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY", re.IGNORECASE)
# RAY_AUTH_TOKEN_PATH, LABEL_STUDIO_TOKEN_PATH …: masking a path would hide the one thing an
# error message needs to say (which file to fix), and reveals nothing secret.
_LOCATION_SUFFIXES = ("_PATH", "_FILE", "_DIR")
_NOT_SECRET_VALUES = frozenset({"true", "false", "none", "null", "yes", "no", "on", "off"})

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization headers, also inside dict/JSON reprs: 'Authorization': 'Token abc'
    (
        re.compile(
            r"""((?:proxy-)?authorization["']?\s*[:=]\s*["']?)[^"'\r\n,}]+""",
            re.IGNORECASE,
        ),
        r"\1" + MASK,
    ),
    (re.compile(r"(\bbearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1" + MASK),
    # secret-looking name = value (query strings, CLI args, YAML, dict reprs)
    (
        re.compile(
            r"""(\b[\w-]*(?:token|secret|password|passwd|\w_?key)["']?\s*[:=]\s*["']?)"""
            r"""[^\s"',;&}]+""",
            re.IGNORECASE,
        ),
        r"\1" + MASK,
    ),
    # scheme://user:password@host
    (
        re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+(@)", re.IGNORECASE),
        r"\1" + MASK + r"\2",
    ),
)


def secret_env_values(
    environ: Mapping[str, str] | None = None, min_length: int = MIN_SECRET_LENGTH
) -> list[str]:
    """Values of secret-named environment variables worth masking, longest first."""
    env = os.environ if environ is None else environ
    values = {
        v
        for k, v in env.items()
        if _SECRET_NAME.search(k)
        and not k.upper().endswith(_LOCATION_SUFFIXES)  # where a secret lives is no secret
        and len(v) >= min_length
        and v.strip().lower() not in _NOT_SECRET_VALUES
    }
    # longest first so a secret that contains another is masked whole
    return sorted(values, key=len, reverse=True)


_SECRET_QUERY = re.compile(r"token|secret|password|passwd|key|sig|signature|credential", re.I)


def redact_url(url: str) -> str:
    """``url`` safe to log or store: the password and secret-looking query values masked.

    Applied where a URL is *kept* (run tables, error messages printed without logging), because
    the logging filter only sees log records; user names, hosts and paths stay readable.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return SecretRedactor(environ={}).redact(url)
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if sep else netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if _SECRET_QUERY.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class SecretRedactor:
    """Masks secrets in text. Environment values are re-read when the environment changes.

    Re-reading matters because tokens are often loaded after logging is set up (from a
    ``.env`` file, or by Ray which sets ``RAY_AUTH_TOKEN`` in workers).
    """

    def __init__(
        self,
        extra_secrets: Iterable[str] = (),
        *,
        environ: Mapping[str, str] | None = None,
        min_length: int = MIN_SECRET_LENGTH,
    ) -> None:
        self._extra = [s for s in extra_secrets if s]
        self._environ = environ
        self._min_length = min_length
        self._lock = threading.Lock()
        self._cache_key: tuple[str, ...] | None = None
        self._env_re: re.Pattern[str] | None = None

    def _secret_re(self) -> re.Pattern[str] | None:
        values = tuple(secret_env_values(self._environ, self._min_length)) + tuple(self._extra)
        with self._lock:
            if values != self._cache_key:
                self._cache_key = values
                ordered = sorted(set(values), key=len, reverse=True)
                self._env_re = (
                    re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None
                )
            return self._env_re

    def add(self, secret: str) -> None:
        """Mask ``secret`` too (e.g. a token read from a file rather than the environment)."""
        if secret:
            self._extra.append(secret)

    def redact(self, text: str) -> str:
        if not text:
            return text
        secret_re = self._secret_re()
        if secret_re is not None:
            text = secret_re.sub(MASK, text)
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message, traceback and stack text with secrets masked."""

    def __init__(self, redactor: SecretRedactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor if redactor is not None else SecretRedactor()
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad %-args: keep the raw template, still redacted
            message = str(record.msg)
        record.msg = self.redactor.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True


_HANDLER_MARK = "_earthloop_handler"


def setup_logging(
    level: int | str = "INFO",
    *,
    stream: TextIO | None = None,
    fmt: str = DEFAULT_FORMAT,
    redactor: SecretRedactor | None = None,
) -> logging.Handler:
    """Configure the root logger: one stream handler, time + level + logger in each line.

    Idempotent (a second call replaces the handler it installed, so lines are not doubled), and
    the redaction filter is also put on every other handler already on the root logger.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_MARK, False):
            root.removeHandler(h)
            h.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(logging.Formatter(fmt))
    redacting = RedactingFilter(redactor)
    handler.addFilter(redacting)
    for h in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(redacting)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
