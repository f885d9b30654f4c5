"""Periodic progress lines for long work (ingest, pretraining, sweeps).

Why a log line and not a progress bar: jobs run under ``ray job submit`` and in CI, where output
is a log stream; one line every N seconds stays readable there, survives in job logs, and tells
a person at a glance whether the job is moving, how fast, and when it will end.

Example line::

    pretrain: 1200/5000 24.0% | 85.3 samples/s (avg 80.1) | elapsed 15s | eta 44s | loss=0.4312

The shown rate is the rate since the previous line: start-up (worker spin-up, first reads, JIT)
would otherwise drag an all-time average, and the ETA, for a long time. The final line reports
the all-time average.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["Progress", "format_duration"]

_DEFAULT_LOGGER = logging.getLogger("earthloop")


def format_duration(seconds: float) -> str:
    """Compact ``1h02m03s`` / ``4m05s`` / ``7s`` form; ``?`` when unknown or infinite."""
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m{sec:02d}s"
    if m:
        return f"{m}m{sec:02d}s"
    return f"{sec}s"


def _fmt_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """Counts done units and logs a line every ``every_s`` seconds and once at the end.

    ``clock`` is injectable (monotonic seconds) so tests can drive time. Used as a context
    manager the final line is written on exit, saying ``failed`` if the block raised.
    """

    def __init__(
        self,
        name: str,
        total: int | None = None,
        *,
        unit: str = "items",
        every_s: float = 30.0,
        logger: logging.Logger | None = None,
        level: int = logging.INFO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every_s <= 0:
            raise ValueError("every_s must be > 0")
        self.name = name
        self.total = total
        self.unit = unit
        self.every_s = every_s
        self.logger = logger if logger is not None else _DEFAULT_LOGGER
        self.level = level
        self._clock = clock
        self._t0 = clock()
        self._last_t = self._t0
        self._last_done = 0
        self._window_rate: float | None = None
        self.done = 0
        self.fields: dict[str, object] = {}
        self._closed = False

    # -- measurements ---------------------------------------------------------------------------
    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._t0

    @property
    def average_rate(self) -> float:
        """Units per second since the start."""
        el = self.elapsed_s
        return self.done / el if el > 0 else 0.0

    @property
    def rate(self) -> float:
        """Units per second over the last reporting window (the average before the first)."""
        return self._window_rate if self._window_rate is not None else self.average_rate

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate; None without a total or without progress yet."""
        if self.total is None:
            return None
        remaining = max(self.total - self.done, 0)
        if remaining == 0:
            return 0.0
        r = self.rate
        return remaining / r if r > 0 else None

    # -- updates --------------------------------------------------------------------------------
    def update(self, n: int = 1, **fields: object) -> None:
        """Add ``n`` done units and/or refresh custom fields; logs if the period has passed."""
        self.done += n
        if fields:
            self.fields.update(fields)
        if self._clock() - self._last_t >= self.every_s:
            self.log()

    def set_fields(self, **fields: object) -> None:
        """Refresh custom fields (loss, data-wait fraction, ...) without counting progress."""
        self.fields.update(fields)

    def line(self, *, final: bool = False, status: str | None = None) -> str:
        """The progress line as it would be logged now."""
        parts: list[str] = []
        head = f"{self.name}: {self.done}"
        if self.total is not None:
            head += f"/{self.total}"
            if self.total > 0:
                head += f" {100.0 * self.done / self.total:.1f}%"
        else:
            head += f" {self.unit}"
        if status:
            head += f" {status}"
        parts.append(head)
        if final:
            parts.append(f"{self.average_rate:.4g} {self.unit}/s avg")
        else:
            parts.append(f"{self.rate:.4g} {self.unit}/s (avg {self.average_rate:.4g})")
        parts.append(f"elapsed {format_duration(self.elapsed_s)}")
        if not final and self.total is not None:
            eta = self.eta_s
            parts.append(f"eta {format_duration(eta) if eta is not None else '?'}")
        if self.fields:
            parts.append(" ".join(f"{k}={_fmt_value(v)}" for k, v in self.fields.items()))
        return " | ".join(parts)

    def log(self) -> str:
        """Log a line now and start a new rate window."""
        now = self._clock()
        dt = now - self._last_t
        if dt > 0:
            self._window_rate = (self.done - self._last_done) / dt
        self._last_t = now
        self._last_done = self.done
        text = self.line()
        self.logger.log(self.level, "%s", text)
        return text

    def close(self, status: str = "done") -> str | None:
        """Log the final line once; later calls do nothing."""
        if self._closed:
            return None
        self._closed = True
        text = self.line(final=True, status=status)
        self.logger.log(self.level if status == "done" else logging.WARNING, "%s", text)
        return text

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close("done" if exc_type is None else f"failed ({exc_type.__name__})")
