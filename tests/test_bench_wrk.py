"""The bench's reading of wrk: percentiles ranked as wrk ranks them, and rounds merged."""

from __future__ import annotations

from bench.wrk import WrkResult, combined, percentile_us


def result(histogram: tuple[tuple[int, int], ...], p99_us: int) -> WrkResult:
    requests = sum(count for _, count in histogram)
    return WrkResult(
        requests_per_second=requests,
        p50_ms=percentile_us(histogram, 50) / 1000,
        p99_ms=p99_us / 1000,
        worst_round_p99_ms=p99_us / 1000,
        requests=requests,
        errors={"timeout": 0},
        server_cpu=1.0,
        wrk_cpu=0.2,
        seconds=1.0,
        histogram=histogram,
    )


def test_a_percentile_is_the_first_latency_whose_running_count_reaches_its_rank() -> None:
    histogram = ((1_000, 98), (5_000, 1), (40_000, 1))  # 100 requests

    assert percentile_us(histogram, 50) == 1_000
    assert percentile_us(histogram, 97) == 1_000
    assert percentile_us(histogram, 98) == 5_000  # the 99th request: wrk ranks N * p + 1
    assert percentile_us(histogram, 99) == 40_000
    assert percentile_us(reversed(histogram), 98) == 5_000
    assert percentile_us((), 99) == 0


def test_rounds_combine_into_percentiles_of_all_their_requests_and_keep_the_worst_round() -> None:
    quiet = result(((2_000, 990), (3_000, 10)), p99_us=3_000)
    paused = result(((2_000, 980), (50_000, 20)), p99_us=50_000)

    both = combined([quiet, paused, quiet])

    assert both.requests == 3_000
    assert both.p99_ms == 3.0  # 20 of 3,000 requests waited 50 ms: under 1 %
    assert both.worst_round_p99_ms == 50.0
    assert both.p50_ms == 2.0
    assert dict(both.histogram) == {2_000: 2_960, 3_000: 20, 50_000: 20}
