"""The project's error types, and how an entry point reports one.

One base class lets a job's entry point tell "the user's input or environment is wrong" (one clear
line on stderr, non-zero exit) from a bug (a traceback is the useful output then).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

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


def exit_process(code: int) -> NoReturn:
    """End a job's process with ``code`` without running interpreter finalisation.

    Why: after Delta writes, the Rust runtime inside ``deltalake`` can abort while Python tears
    down its modules ("terminate called without an active exception", exit status 134; measured
    here in 1 of 10 runs of a MERGE followed by a read, delta-rs issue 2184). A job that did all
    its work would then report failure to ``ray job submit``. Everything a job owes the outside
    world is flushed first: log handlers, stdout/stderr, and the Ray connection.
    """
    ray = sys.modules.get("ray")  # only if the job used Ray; never import it just to exit
    try:
        if ray is not None and ray.is_initialized():
            ray.shutdown()
    except Exception as exc:  # a failing shutdown must not change the job's own exit status
        print(f"earthloop: ray.shutdown failed: {exc}", file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
