"""The project's error types, and how an entry point reports one.

One base class lets a job's entry point tell "the user's input or environment is wrong" (one clear
line on stderr, non-zero exit) from a bug (a traceback is the useful output then).
"""

from __future__ import annotations

import sys

from earthloop.observe.logs import SecretRedactor


class EarthloopError(Exception):
    """Base of every error earthloop raises on purpose: its message is meant for the user."""


class ConfigError(EarthloopError, ValueError):
    """A configuration problem, phrased for the person who wrote the YAML."""


def fail(prog: str, message: object, code: int = 2) -> int:
    """Print ``prog: message`` on stderr (where job logs and shells expect errors); return ``code``.

    The message is redacted like a log line: errors often quote a URL with credentials in it.
    """
    print(f"{prog}: {SecretRedactor().redact(str(message))}", file=sys.stderr, flush=True)
    return code
