"""The progress bar: only on a terminal, only after a second, wiped at the end."""

from __future__ import annotations

import io

from tracker.progress import CHECK_EVERY, DELAY, Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_nothing_is_drawn_in_the_first_second() -> None:
    terminal, clock = Terminal(), Clock()
    with Progress("verify", 10 * CHECK_EVERY, stream=terminal, clock=clock) as progress:
        clock.now += DELAY / 2
        progress.advance(5 * CHECK_EVERY)
    assert terminal.getvalue() == ""


def test_a_long_run_draws_the_bar_and_wipes_it_at_the_end() -> None:
    terminal, clock = Terminal(), Clock()
    with Progress("verify", 4 * CHECK_EVERY, stream=terminal, clock=clock) as progress:
        clock.now += DELAY + 1
        progress.advance(2 * CHECK_EVERY)
        drawn = terminal.getvalue()
        assert drawn.startswith("\rverify [" + "#" * 15 + "." * 15 + "]  50% 8,192/16,384 events")
    assert terminal.getvalue().endswith("\r\033[K")


def test_piped_output_never_gets_a_bar() -> None:
    pipe, clock = io.StringIO(), Clock()
    with Progress("export", 4 * CHECK_EVERY, stream=pipe, clock=clock) as progress:
        clock.now += 60
        progress.advance(4 * CHECK_EVERY)
    assert pipe.getvalue() == ""


def test_an_empty_job_draws_nothing() -> None:
    terminal, clock = Terminal(), Clock()
    with Progress("replay", 0, stream=terminal, clock=clock) as progress:
        clock.now += 60
        progress.advance(CHECK_EVERY)
    assert terminal.getvalue() == ""
