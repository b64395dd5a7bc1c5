"""The Stripe token bucket, on a virtual clock: no second ever holds more than the rate allows."""

from __future__ import annotations

import asyncio

import pytest

from kubepay.stripe.rate_limit import StripeBudget, TokenBucket


class VirtualClock:
    """Sleeping advances the clock instantly (and still yields to the event loop)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


def most_in_one_second(times: list[float]) -> int:
    """The most operations in any half-open window [t, t + 1)."""
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + 1.0 - 1e-9) for t in times)


async def acquire_all(bucket: TokenBucket, clock: VirtualClock, count: int) -> list[float]:
    times: list[float] = []

    async def one() -> None:
        await bucket.acquire()
        times.append(clock())

    await asyncio.gather(*(one() for _ in range(count)))
    return times


async def test_many_callers_at_once_get_the_rate_and_never_more_in_any_second() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(25, clock=clock, sleep=clock.sleep)
    clock.now += 60  # a long quiet spell first: nothing may have piled up

    times = await acquire_all(bucket, clock, 150)

    assert most_in_one_second(times) == 25
    assert max(times) - min(times) == pytest.approx(149 / 25)  # the whole rate is used
    assert times == sorted(times)  # first come, first served


async def test_an_explicit_burst_adds_to_the_first_second_only() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(10, burst=5, clock=clock, sleep=clock.sleep)

    times = await acquire_all(bucket, clock, 40)

    assert times[:5] == [1000.0] * 5
    assert most_in_one_second(times) == 5 + 10 - 1
    assert most_in_one_second([t for t in times if t >= 1001.0]) == 10


async def test_pause_silences_every_caller_for_the_whole_time_from_the_429() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(10, clock=clock, sleep=clock.sleep)
    await bucket.acquire()
    clock.now += 0.5  # the request's round trip: its 429 arrives half a second after the acquire
    bucket.pause(2.0)
    paused_at = clock()

    times = await acquire_all(bucket, clock, 3)

    assert min(times) >= paused_at + 2.0
    assert most_in_one_second(times) <= 10


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(10, burst=0.5)


async def test_urgent_work_goes_before_queued_background_reads() -> None:
    """5,000 catch-up reads after a restart must not make a new payment wait: it passes all but one of them."""
    clock = VirtualClock()
    budget = StripeBudget(100.0, background_share=0.5, clock=clock, sleep=clock.sleep)
    order: list[str] = []
    twenty_read = asyncio.Event()

    async def read(i: int) -> None:
        await budget.acquire(background=True)
        order.append(f"read-{i}")
        if len(order) == 20:
            twenty_read.set()

    reads = [asyncio.create_task(read(i)) for i in range(200)]
    await twenty_read.wait()
    await budget.acquire()  # a new payment's create
    order.append("create")
    await asyncio.gather(*reads)
    assert order.index("create") <= 20 + 2  # behind at most the read already holding the shared bucket, and one more


async def test_background_reads_alone_use_at_most_their_share() -> None:
    clock = VirtualClock()
    budget = StripeBudget(100.0, background_share=0.5, clock=clock, sleep=clock.sleep)
    times: list[float] = []

    async def read() -> None:
        await budget.acquire(background=True)
        times.append(clock())

    await asyncio.gather(*(read() for _ in range(300)))
    assert most_in_one_second(times) <= 50 + 1


class LateClock(VirtualClock):
    """A busy event loop: every sleep ends 3 ms later than asked."""

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds + 0.003)


async def test_a_late_event_loop_still_gets_the_whole_rate_and_never_more_in_any_second() -> None:
    clock = LateClock()
    paced = TokenBucket(100, clock=clock, sleep=clock.sleep)  # depth 1: each late wake-up is budget lost
    times = await acquire_all(paced, clock, 300)
    assert 300 / (max(times) - min(times)) < 80

    clock = LateClock()
    budget = StripeBudget(100.0, clock=clock, sleep=clock.sleep)
    times = []

    async def create() -> None:
        await budget.acquire()
        times.append(clock())

    await asyncio.gather(*(create() for _ in range(300)))
    assert most_in_one_second(times) <= 100  # the window: never over the limit, even right after a quiet spell
    assert 300 / (max(times) - min(times)) > 97  # the saved tenth of a second makes up for late wake-ups


def test_a_share_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="background_share"):
        StripeBudget(100.0, background_share=1.5)
