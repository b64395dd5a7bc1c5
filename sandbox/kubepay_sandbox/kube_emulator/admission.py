"""Admission policies: the writes a test makes the emulator refuse, as a denying ValidatingAdmissionPolicy would."""

from __future__ import annotations

from kubepay_sandbox.kube_emulator.errors import ApiError
from kubepay_sandbox.kube_emulator.resources import JsonDict, Resource


class Denials:
    def __init__(self) -> None:
        self._messages: dict[tuple[str, str], str] = {}  # (plural, namespace) -> an admission policy's message

    def deny(self, plural: str, namespace: str, message: str | None) -> None:
        """See :meth:`KubeEmulator.deny`."""
        if message is None:
            self._messages.pop((plural, namespace), None)
        else:
            self._messages[(plural, namespace)] = message

    def check(self, res: Resource, obj: JsonDict) -> None:
        meta = obj["metadata"]
        message = self._messages.get((res.plural, str(meta.get("namespace"))))
        if message is not None:
            name = meta.get("name", "")
            raise ApiError(
                422,
                "Invalid",
                f'{res.store_key} "{name}" is forbidden: ValidatingAdmissionPolicy \'kubepay-test\' with binding '
                f"'kubepay-test' denied request: {message}",
                {"name": name, "group": res.group, "kind": res.plural},
            )
