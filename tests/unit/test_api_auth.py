"""The memory of `serviceaccount` decisions: short-lived and bounded."""

from __future__ import annotations

from kubepay_webhook.api_auth import Decisions, Refusal

DENIED = Refusal(403, "no")


def test_decisions_expire() -> None:
    now = [100.0]
    decisions = Decisions(30, 10, clock=lambda: now[0])
    decisions.put(b"allowed", None)
    decisions.put(b"denied", DENIED)
    assert decisions.get(b"allowed") == (True, None)
    assert decisions.get(b"denied") == (True, DENIED)
    assert decisions.get(b"unknown") == (False, None)
    now[0] += 30
    assert decisions.get(b"allowed") == (False, None)
    assert decisions.get(b"denied") == (False, None)


def test_decisions_forget_the_oldest_beyond_their_size() -> None:
    decisions = Decisions(30, 2)
    for key in (b"a", b"b", b"c"):
        decisions.put(key, None)
    assert [decisions.get(key)[0] for key in (b"a", b"b", b"c")] == [False, True, True]
