"""Client libraries that log every retry are cut to one line per message every 10 s, with a count."""

from __future__ import annotations

import logging

from kubepay.logs import Throttle


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_repeats_pass_once_per_period_and_the_next_line_counts_the_dropped_ones() -> None:
    now = [0.0]
    throttle = Throttle(("aiokafka",), seconds=10, clock=lambda: now[0])
    passed = []
    for tick in range(300):  # 30 s of a retry every 100 ms, each naming another port
        now[0] = tick / 10
        record = _record("aiokafka.conn", "Unable connect to node with id %s: %s", 1, f"refused 127.0.0.1:{tick}")
        if throttle.filter(record):
            passed.append(record.getMessage())
    assert passed == [
        "Unable connect to node with id 1: refused 127.0.0.1:0",
        "Unable connect to node with id 1: refused 127.0.0.1:100 (99 more like this in the last 10s)",
        "Unable connect to node with id 1: refused 127.0.0.1:200 (99 more like this in the last 10s)",
    ]


def test_other_messages_and_other_loggers_are_left_alone() -> None:
    throttle = Throttle(("aiokafka",), seconds=10, clock=lambda: 0.0)
    assert throttle.filter(_record("aiokafka.cluster", "Unable to update metadata from %s", [111]))
    assert throttle.filter(_record("aiokafka.conn", "Unable connect to node with id %s", 111))
    assert all(throttle.filter(_record("kopf.objects", "Handler 'mirror' failed")) for _ in range(5))
