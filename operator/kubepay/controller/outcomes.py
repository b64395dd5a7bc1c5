"""How a handler says what should happen next, when it did not simply finish: try again later, or give up."""

from __future__ import annotations


class Retry(Exception):
    """Not done yet (an outage, a pause): the controller handles the resource again after `delay` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class GiveUp(Exception):
    """Cannot be done, and saying so again would not help: status and a Warning event already say why."""
