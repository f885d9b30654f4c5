"""Progress lines driven by an injected clock."""

from __future__ import annotations

import logging

import pytest
from earthloop.observe.progress import Progress, format_duration


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "earthloop"]


def test_logs_every_period_with_done_total_rate_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger="earthloop")
    p = Progress("ingest", total=100, unit="chips", every_s=10, clock=clock)
    for _ in range(9):  # 9 s at 2 chips/s: below the period, nothing logged
        clock.t += 1
        p.update(2)
    assert lines(caplog) == []
    clock.t += 1
    p.update(2, data_wait=0.125)  # t = 10 s, 20 chips
    out = lines(caplog)
    assert len(out) == 1
    assert out[0] == (
        "ingest: 20/100 20.0% | 2 chips/s (avg 2) | elapsed 10s | eta 40s | data_wait=0.125"
    )


def test_rate_and_eta_follow_the_last_window_not_the_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger="earthloop")
    p = Progress("pretrain", total=1000, unit="samples", every_s=10, clock=clock)
    clock.t += 10
    p.update(100)  # slow start-up: 10/s
    clock.t += 10
    p.update(500)  # steady state: 50/s
    out = lines(caplog)
    assert len(out) == 2
    assert p.rate == pytest.approx(50.0)
    assert p.average_rate == pytest.approx(30.0)
    assert p.eta_s == pytest.approx(400 / 50)
    assert "50 samples/s (avg 30)" in out[1] and "eta 8s" in out[1]


def test_context_manager_writes_final_line_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger="earthloop")
    with Progress("label", total=4, unit="tasks", every_s=60, clock=clock) as p:
        clock.t += 2
        p.update(4, loss=0.123456)
    p.close()  # second close: no second line
    out = lines(caplog)
    assert out == ["label: 4/4 100.0% done | 2 tasks/s avg | elapsed 2s | loss=0.1235"]


def test_failure_is_reported_as_warning_and_exception_propagates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger="earthloop")
    with pytest.raises(KeyError), Progress("tune", total=10, clock=clock) as p:
        p.update(3)
        raise KeyError("boom")
    rec = [r for r in caplog.records if r.name == "earthloop"][-1]
    assert rec.levelno == logging.WARNING
    assert rec.getMessage().startswith("tune: 3/10 30.0% failed (KeyError)")


def test_unknown_total_has_no_eta_and_no_progress_has_unknown_eta() -> None:
    clock = Clock()
    p = Progress("stream", unit="chips", clock=clock, logger=logging.getLogger("x"))
    clock.t += 5
    p.update(10)
    assert p.eta_s is None
    assert p.line() == "stream: 10 chips | 2 chips/s (avg 2) | elapsed 5s"
    q = Progress("ingest", total=10, clock=clock, logger=logging.getLogger("x"))
    assert q.eta_s is None  # no progress yet: unknown, not infinite
    assert "eta ?" in q.line()


def test_set_fields_does_not_count_progress() -> None:
    p = Progress("x", total=2, clock=Clock(), logger=logging.getLogger("x"))
    p.set_fields(loss=1.5)
    assert p.done == 0 and p.fields == {"loss": 1.5}


def test_every_s_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Progress("x", every_s=0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (7.4, "7s"), (65, "1m05s"), (3723, "1h02m03s"), (float("inf"), "?"), (-1, "?")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
