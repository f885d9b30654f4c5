"""setup_logging: format and secret redaction on everything that reaches the handler."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest
from earthloop.observe.logs import RedactingFilter, SecretRedactor, setup_logging

TOKEN = "ls-0123456789abcdef0123456789abcdef01234567"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Restore the root logger: setup_logging changes process-wide state."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    filters = {h: list(h.filters) for h in handlers}
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    for h in handlers:
        h.filters[:] = filters[h]
    root.setLevel(level)


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABEL_STUDIO_USER_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("GRAFANA_ADMIN_PASSWORD", "correct-horse-battery")
    monkeypatch.setenv("SOME_FEATURE_KEY", "1")  # too short to be a secret
    monkeypatch.setenv("PUBLIC_SETTING", "earth-search-v1")  # not a secret name


def test_format_has_time_level_and_logger(root_logging: None) -> None:
    buf = io.StringIO()
    setup_logging("INFO", stream=buf)
    logging.getLogger("earthloop.ingest").info("hello %s", "world")
    line = buf.getvalue().strip()
    assert re.match(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO earthloop\.ingest \[\d+\]: hello world$", line
    ), line


def test_secret_env_values_are_masked_from_any_logger(
    root_logging: None, secrets_env: None
) -> None:
    buf = io.StringIO()
    setup_logging("DEBUG", stream=buf)
    logging.getLogger("earthloop.active").info("pushing with token %s", TOKEN)
    logging.getLogger("botocore.auth").debug("signing with %s", AWS_SECRET)  # third party
    logging.getLogger("earthloop").warning("grafana pw is correct-horse-battery")
    logging.getLogger("earthloop").info("step 1 of 10 on earth-search-v1")
    out = buf.getvalue()
    for secret in (TOKEN, AWS_SECRET, "correct-horse-battery"):
        assert secret not in out
    assert out.count("***") == 3
    assert "step 1 of 10 on earth-search-v1" in out  # short / non-secret values untouched


def test_authorization_headers_and_inline_secrets_are_masked(root_logging: None) -> None:
    buf = io.StringIO()
    setup_logging("INFO", stream=buf, redactor=SecretRedactor(environ={}))
    log = logging.getLogger("earthloop.webhook")
    log.info("request headers %s", {"Authorization": "Token abc123secret", "Accept": "json"})
    log.info("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig")
    log.info("GET /api/projects?api_key=k3yvalue42&page=2")
    log.info("storage url s3://minio:supersecretpw@127.0.0.1:9000/bucket")
    log.info("X-Auth-Token: tok_987654321")
    out = buf.getvalue()
    for leaked in ("abc123secret", "eyJhbGci", "k3yvalue42", "supersecretpw", "tok_987654321"):
        assert leaked not in out, out
    assert "'Accept': 'json'" in out and "page=2" in out and "@127.0.0.1:9000/bucket" in out
    assert (
        SecretRedactor(environ={}).redact("Token authentication is enabled")
        == "Token authentication is enabled"
    )


def test_tracebacks_are_redacted(root_logging: None, secrets_env: None) -> None:
    buf = io.StringIO()
    setup_logging("INFO", stream=buf)
    try:
        raise RuntimeError(f"401 for token {TOKEN}")
    except RuntimeError:
        logging.getLogger("earthloop").exception("push failed")
    out = buf.getvalue()
    assert "Traceback" in out and "RuntimeError: 401 for token ***" in out
    assert TOKEN not in out


def test_secrets_set_after_setup_are_masked(
    root_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    buf = io.StringIO()
    setup_logging("INFO", stream=buf)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "late-token-0123456789")
    logging.getLogger("earthloop").info("connecting with late-token-0123456789")
    assert "late-token-0123456789" not in buf.getvalue()


def test_setup_is_idempotent_and_covers_existing_handlers(root_logging: None) -> None:
    other = io.StringIO()
    pre = logging.StreamHandler(other)
    logging.getLogger().addHandler(pre)
    buf = io.StringIO()
    setup_logging("INFO", stream=io.StringIO())
    setup_logging("INFO", stream=buf)
    logging.getLogger("earthloop").info("password=hunter2hunter2")
    assert buf.getvalue().count("password=***") == 1
    assert "hunter2" not in other.getvalue()  # the filter was added to the existing handler too
    assert any(isinstance(f, RedactingFilter) for f in pre.filters)


def test_bad_format_args_still_log_redacted(root_logging: None) -> None:
    buf = io.StringIO()
    setup_logging("INFO", stream=buf)
    logging.getLogger("earthloop").info("token=%d abcdefgh", "not-a-number")
    assert "token=***" in buf.getvalue()


def test_paths_of_secret_files_are_not_masked() -> None:
    from earthloop.observe.logs import secret_env_values

    env = {
        "LABEL_STUDIO_TOKEN_PATH": "/srv/stack/labelstudio_token",
        "RAY_AUTH_TOKEN": "0123456789abcdef",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMIK7MDENG",
    }
    values = secret_env_values(env)
    assert "/srv/stack/labelstudio_token" not in values
    assert {"0123456789abcdef", "wJalrXUtnFEMIK7MDENG"} <= set(values)
