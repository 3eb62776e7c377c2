"""The one rule for failures every process follows: what is an outage, what is a bug."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.backoff import Outage, bug, is_transient, pause


@pytest.mark.parametrize(
    "exc",
    [
        RedisConnectionError("Connection refused"),
        RedisTimeoutError("Timeout reading from socket"),
        OSError("Connection reset by peer"),
        TimeoutError(),
        ReadOnlyError("READONLY You can't write against a read only replica."),
        ResponseError("LOADING Redis is loading the dataset in memory"),
        ResponseError("BUSY Redis is busy running a script."),
        ResponseError("MASTERDOWN Link with MASTER is down"),
        ResponseError("NOREPLICAS Not enough good replicas to write."),
        ResponseError("TRYAGAIN Multiple keys request during rehashing of slot"),
        ResponseError("CLUSTERDOWN The cluster is down"),
        ResponseError("OOM command not allowed when used memory > 'maxmemory'."),
    ],
)
def test_an_unreachable_or_recovering_redis_is_an_outage(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ResponseError("ERR user_script:3: Attempt to index a nil value"),
        ResponseError("ERR Error running script: user_script:40: Expected value but found T_END"),
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        ResponseError("ERR wrong number of arguments for 'hset' command"),
        ValueError("a bug of ours"),
        KeyError("field"),
    ],
)
def test_a_script_error_or_a_bug_of_ours_is_not_an_outage(exc: BaseException) -> None:
    assert not is_transient(exc)


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_an_outage_is_logged_when_it_starts_and_ends_and_every_failure_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = Outage("Kafka (test)", logging.getLogger("test.outage"), dependency="kafka")
    before = _count("waitroom_dependency_errors_total", dependency="kafka")
    with caplog.at_level(logging.WARNING, logger="test.outage"):
        delays = [outage.failed(RedisConnectionError("refused")) for _ in range(5)]
        assert outage.down and outage.attempts == 5
        assert outage.recovered() is True
        assert outage.recovered() is False
    assert all(0 <= d <= 5.0 for d in delays)
    assert _count("waitroom_dependency_errors_total", dependency="kafka") == before + 5
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "Kafka (test) unavailable" in lines[0] and "available again" in lines[1]
    assert (outage.down, outage.outages) == (False, 1)


def test_a_bug_is_logged_with_its_traceback_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    before = _count("waitroom_internal_errors_total", where="test step")
    try:
        raise ResponseError("ERR user_script:1: boom")
    except ResponseError as exc:
        with caplog.at_level(logging.ERROR, logger="test.bug"):
            bug(logging.getLogger("test.bug"), "test step", exc, "concert1")
    assert _count("waitroom_internal_errors_total", where="test step") == before + 1
    (record,) = caplog.records
    assert record.getMessage().startswith("test step failed for concert1")
    assert record.exc_info is not None  # the traceback goes to the log


def test_pause_ends_early_when_its_event_is_set() -> None:
    async def body() -> tuple[bool, bool]:
        stopping = asyncio.Event()
        slept = await pause(stopping, 0.01)
        asyncio.get_running_loop().call_later(0.01, stopping.set)
        stopped = await asyncio.wait_for(pause(stopping, 3600), 10)
        return slept, stopped

    assert asyncio.run(body()) == (False, True)


def test_a_heartbeat_goes_stale_after_three_of_its_own_intervals_and_never_under_5_s() -> None:
    from shared.heartbeats import Beat, max_age

    assert (max_age(1.0), max_age(10.0)) == (5.0, 30.0)
    now = 1_000_000
    sweeping = Beat("admitter-1", now - 6_000, {"interval": 1.0})
    beating = Beat("consumer-1", now - 6_000, {"interval": 5.0})
    assert not sweeping.fresh(now_ms=now) and beating.fresh(now_ms=now)
    assert Beat("odd", now, {"interval": "junk"}).max_age == 5.0


def test_a_failure_raised_while_handling_a_lost_connection_is_part_of_the_outage() -> None:
    """redis-py answers a server killed under a pub/sub read with asyncio's RuntimeError."""
    try:
        try:
            raise RedisConnectionError("Connection closed by server.")
        except RedisConnectionError:
            raise RuntimeError(
                "unable to perform operation on <TCPTransport closed=True>"
            ) from None
    except RuntimeError as wrapped:
        assert wrapped.__context__ is not None and is_transient(wrapped)
    try:
        try:
            raise ValueError("a bug of ours")
        except ValueError:
            raise RuntimeError("while handling a bug")  # noqa: B904
    except RuntimeError as unrelated:
        assert not is_transient(unrelated)
