"""Contract checks: Kafka messages against schemas/, and API answers against the OpenAPI document."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


@cache
def message_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{name}.json").read_text())
    return schema


def validate_message(name: str, value: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless `value` is a valid message of schemas/<name>.json."""
    jsonschema.Draft202012Validator(message_schema(name), format_checker=jsonschema.FormatChecker()).validate(value)


class OpenApiChecker:
    """Finds the documented operation of a request and validates the answer against its response schema."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.checked: set[tuple[str, str, str]] = set()

    def template(self, method: str, path: str) -> str:
        paths = self.document["paths"]
        if path in paths and method.lower() in paths[path]:
            return path
        for template, operations in paths.items():
            pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
            if method.lower() in operations and re.match(pattern, path):
                return str(template)
        raise AssertionError(f"{method} {path} is not in the OpenAPI document")

    def check(self, method: str, path: str, status: int, body: Any, content_type: str = "application/json") -> None:
        template = self.template(method, path.split("?", 1)[0])
        responses = self.document["paths"][template][method.lower()]["responses"]
        assert str(status) in responses, f"{method} {template} answered {status}, which is not documented"
        content = responses[str(status)]["content"]
        assert content_type in content, f"{method} {template} answered {content_type}, documented: {list(content)}"
        schema = content[content_type]["schema"]
        # Resolve "#/components/..." against the document by validating with the components at the root.
        rooted = {**schema, "components": self.document["components"]}
        jsonschema.Draft202012Validator(rooted, format_checker=jsonschema.FormatChecker()).validate(body)
        self.checked.add((method.upper(), template, str(status)))


class ApiClient:
    """Talks to a running `kubepay api` and checks every answer against its own /openapi.json."""

    def __init__(self, base_url: str, token: str, checker: OpenApiChecker) -> None:
        self.base_url = base_url
        self.token = token
        self.checker = checker

    @classmethod
    async def connect(cls, base_url: str, token: str) -> ApiClient:
        """`token`: what `call` sends as the bearer token unless told otherwise (token=None sends none)."""
        async with aiohttp.ClientSession() as session, session.get(f"{base_url}/openapi.json") as response:
            assert response.status == 200
            document = await response.json()
        jsonschema.Draft202012Validator.check_schema({"$defs": document["components"]["schemas"]})
        checker = OpenApiChecker(document)
        checker.check("GET", "/openapi.json", 200, document)
        return cls(base_url, token, checker)

    async def call(self, method: str, path: str, *, body: Any = None, raw: bytes | None = None,
                   token: str | None = "default", headers: dict[str, str] | None = None) -> tuple[int, Any]:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {self.token if token == 'default' else token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            sent["Content-Type"] = "application/json"
        async with aiohttp.ClientSession() as session, \
                session.request(method, self.base_url + path, data=data, headers=sent) as response:
            content_type, status = response.content_type, response.status
            payload = await (response.json() if content_type == "application/json" else response.text())
        self.checker.check(method, path, status, payload, content_type)
        return status, payload
