"""Session codes and the failed-attempt limiter, without a network."""

from __future__ import annotations

import asyncio

from controller import codes


def test_codes_are_50_bits_in_two_readable_groups() -> None:
    made = {codes.new_code() for _ in range(200)}
    assert len(made) == 200
    for code in made:
        first, second = code.split("-")
        assert len(first) == len(second) == 5
        assert set(first + second) <= set(codes.ALPHABET)
    assert codes.CODE_BITS >= 40


def test_reading_is_forgiving_but_strict_about_length() -> None:
    assert codes.normalise(" abcde-fghjk ") == "ABCDEFGHJK"
    assert codes.normalise("O0IL1-abcde") == "00111ABCDE"  # O→0, I/L→1 as heard
    assert codes.normalise("ABCDE-FGHJ") is None
    assert codes.normalise("ABCDE-FGHJU") is None  # U is not in the alphabet


def test_hashes_are_keyed() -> None:
    assert codes.code_hash(b"a" * 32, "ABCDEFGHJK") != codes.code_hash(b"b" * 32, "ABCDEFGHJK")
    assert len(codes.code_hash(b"a" * 32, "ABCDEFGHJK")) == 32


def test_failures_are_limited_per_source_and_only_slow_others() -> None:
    limiter = codes.FailureLimiter(per_source=3, global_limit=5, window_seconds=60)
    for _ in range(3):
        assert limiter.blocked("127.0.0.2", now=0) is None
        limiter.failed("127.0.0.2", now=0)
    assert "this address" in (limiter.blocked("127.0.0.2", now=1) or "")
    assert limiter.blocked("127.0.0.3", now=1) is None
    assert limiter.slowdown(now=1) == 0
    limiter.failed("127.0.0.3", now=1)
    limiter.failed("127.0.0.4", now=1)
    # past the global bound another address is slowed down, never refused
    assert limiter.blocked("127.0.0.5", now=2) is None
    assert limiter.slowdown(now=2) == limiter.slow_seconds
    assert limiter.blocked("127.0.0.2", now=62) is None  # the window moved on
    assert limiter.slowdown(now=62) == 0


async def test_right_codes_in_flight_are_never_counted() -> None:
    # the last session's finding: 600 valid joins at once were refused as failures
    limiter = codes.FailureLimiter(per_source=5, global_limit=5)
    for _ in range(50):
        assert await limiter.begin("127.0.0.2") is None
        limiter.end("127.0.0.2", failed=False)
    assert limiter.blocked("127.0.0.2") is None
    assert limiter.slowdown() == 0


async def test_a_burst_from_one_source_waits_for_the_checks_in_flight() -> None:
    limiter = codes.FailureLimiter(per_source=2)
    assert await limiter.begin("127.0.0.2") is None
    assert await limiter.begin("127.0.0.2") is None
    third = asyncio.create_task(limiter.begin("127.0.0.2"))
    await asyncio.sleep(0)
    assert not third.done()  # both slots are held by checks not yet decided
    limiter.end("127.0.0.2", failed=True)
    await asyncio.sleep(0)
    assert not third.done()  # one failure plus one in flight: still the whole budget
    limiter.end("127.0.0.2", failed=True)
    assert "this address" in (await third or "")


def test_memory_stays_bounded_under_a_spray_of_addresses() -> None:
    limiter = codes.FailureLimiter(global_limit=10**9, window_seconds=1)
    for n in range(12_000):
        limiter.failed(f"127.{n // 65536}.{n // 256 % 256}.{n % 256}", now=n / 1000)
    assert len(limiter._by_source) <= 10_001
