"""Errors as the API server reports them: a field's error (one of a 422's causes) and a Status response."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import aiohttp.web

from kubepay_sandbox.kube_emulator.resources import JsonDict, Resource


@dataclasses.dataclass(frozen=True)
class FieldError:
    field: str  # e.g. "spec.amount"; "" for the root
    reason: str  # FieldValueInvalid, FieldValueRequired, ...
    detail: str  # the message without the field: "Invalid value: 0: spec.amount in body ..."

    @property
    def text(self) -> str:
        return f"{self.field}: {self.detail}" if self.field else self.detail


def field_path(parts: Sequence[str | int]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: JsonDict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> JsonDict:
        status: JsonDict = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status

    def response(self) -> aiohttp.web.Response:
        return aiohttp.web.json_response(self.status(), status=self.code)

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)

    @classmethod
    def not_found(cls, res: Resource, name: str) -> ApiError:
        return cls(
            404,
            "NotFound",
            f'{res.store_key} "{name}" not found',
            {"name": name, "group": res.group, "kind": res.plural},
        )

    @classmethod
    def conflict(cls, res: Resource, name: str) -> ApiError:
        return cls(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {res.store_key} "{name}": the object has '
            "been modified; please apply your changes to the latest version and try again",
            {"name": name, "group": res.group, "kind": res.plural},
        )

    @classmethod
    def invalid(cls, res: Resource, name: str, errors: Sequence[FieldError]) -> ApiError:
        texts = [error.text for error in errors]
        joined = texts[0] if len(texts) == 1 else f"[{', '.join(texts)}]"
        causes = [{"reason": e.reason, "message": e.detail, "field": e.field} for e in errors]
        return cls(
            422,
            "Invalid",
            f'{res.qualified_kind} "{name}" is invalid: {joined}',
            {"name": name, "group": res.group, "kind": res.kind, "causes": causes},
        )
