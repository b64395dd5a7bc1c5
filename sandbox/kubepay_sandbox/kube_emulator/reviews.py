"""TokenReview and SubjectAccessReview for the Kubernetes API emulator, answered as a real API server does.

Tokens the harness issues map to a user: ServiceAccount tokens to ``system:serviceaccount:NS:NAME`` with the
groups, uid and pod ``extra`` a projected token carries. SubjectAccessReviews are answered from a rule table
the harness fills: the first rule naming the user or one of its groups, the verb, the API group, the resource
and the namespace (or every namespace) decides. With no matching rule the answer is ``allowed: false`` and no
reason, as RBAC has no opinion; a ``deny`` rule answers ``denied: true`` as a webhook authorizer can.
Both are ``create``-only, cluster-scoped and not stored, and answer ``201 Created`` with the review's status.
"""

from __future__ import annotations

import collections
import json
import secrets
import threading
import uuid
from dataclasses import dataclass

import aiohttp.web

from kubepay_sandbox.kube_emulator.resources import JsonDict

__all__ = ["Reviews"]

AUTHENTICATION = ("authentication.k8s.io", "v1", "tokenreviews", "TokenReview")
AUTHORIZATION = ("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview")


@dataclass(frozen=True)
class _User:
    username: str
    uid: str
    groups: tuple[str, ...]
    extra: dict[str, list[str]]

    def info(self) -> JsonDict:
        return {"username": self.username, "uid": self.uid, "groups": list(self.groups), "extra": self.extra}


@dataclass(frozen=True)
class _Rule:
    subject: str  # a user name or a group name
    verb: str
    group: str
    resource: str
    namespace: str | None  # None: every namespace (as a ClusterRoleBinding)
    allowed: bool

    def matches(self, user: str, groups: list[str], attributes: JsonDict) -> bool:
        return (
            (self.subject == user or self.subject in groups)
            and self.verb == attributes.get("verb", "")
            and self.group == attributes.get("group", "")
            and self.resource == attributes.get("resource", "")
            and self.namespace in (None, attributes.get("namespace", ""))
        )


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    return aiohttp.web.json_response(body, status=code)


class Reviews:
    """The emulator's authenticator and authorizer, configured by the harness (thread-safe)."""

    def __init__(self, log_size: int = 1000) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, _User] = {}
        self._rules: list[_Rule] = []
        # What was asked, for tests: the user each TokenReview found (None: refused), and each SAR's spec.
        self.token_log: collections.deque[str | None] = collections.deque(maxlen=log_size)
        self.access_log: collections.deque[JsonDict] = collections.deque(maxlen=log_size)

    # -- the harness's controls --------------------------------------------------------------------------

    def issue_token(self, username: str, groups: tuple[str, ...] = (), uid: str = "",
                    extra: dict[str, list[str]] | None = None) -> str:
        """A new bearer token that TokenReview maps to this user."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = _User(username, uid, (*groups, "system:authenticated"), extra or {})
        return token

    def issue_service_account_token(self, namespace: str, name: str, pod: str = "") -> str:
        """A token as a pod of ServiceAccount ``namespace/name`` has it mounted."""
        extra = {"authentication.kubernetes.io/pod-name": [pod],
                 "authentication.kubernetes.io/pod-uid": [str(uuid.uuid4())]} if pod else {}
        return self.issue_token(f"system:serviceaccount:{namespace}:{name}",
                                ("system:serviceaccounts", f"system:serviceaccounts:{namespace}"),
                                str(uuid.uuid4()), extra)

    def allow(self, subject: str, verb: str, resource: str, *, group: str = "", namespace: str | None = None) -> None:
        """Let a user or group `verb` `resource` (of API `group`) in `namespace`, or in all namespaces if None."""
        with self._lock:
            self._rules.append(_Rule(subject, verb, group, resource, namespace, True))

    def deny(self, subject: str, verb: str, resource: str, *, group: str = "", namespace: str | None = None) -> None:
        """An explicit denial, as a webhook authorizer gives (the first matching rule decides)."""
        with self._lock:
            self._rules.append(_Rule(subject, verb, group, resource, namespace, False))

    # -- serving -------------------------------------------------------------------------------------------

    @staticmethod
    def apis() -> list[tuple[str, str, str, str]]:
        """(group, version, plural, kind) of the review resources, for discovery."""
        return [AUTHENTICATION, AUTHORIZATION]

    async def serve(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse | None:
        """Answer a review request; None for any other path."""
        kind = {f"/apis/{g}/{v}/{p}": k for g, v, p, k in self.apis()}.get(raw.path.rstrip("/"))
        if kind is None:
            return None
        if raw.method.upper() != "POST":
            return _status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        try:
            review = json.loads(await raw.read())
        except ValueError as exc:
            return _status(400, "BadRequest", f"the object provided is unrecognized: {exc}")
        if not isinstance(review, dict) or not isinstance(review.get("spec"), dict):
            return _status(400, "BadRequest", f"{kind}: spec is required")
        spec = review["spec"]
        if kind == "TokenReview":
            if not spec.get("token"):
                return _status(400, "BadRequest", "token is required for TokenReview in authentication")
            status = self._authenticate(spec["token"])
        else:
            problem = self._invalid_access_review(spec)
            if problem:
                return _status(422, "Invalid", f'SubjectAccessReview.authorization.k8s.io "" is invalid: {problem}')
            status = self._authorize(spec)
        group, version = (AUTHENTICATION if kind == "TokenReview" else AUTHORIZATION)[:2]
        answer = {"kind": kind, "apiVersion": f"{group}/{version}", "metadata": {"creationTimestamp": None},
                  "spec": spec, "status": status}
        return aiohttp.web.json_response(answer, status=201)

    def _authenticate(self, token: str) -> JsonDict:
        with self._lock:
            user = self._tokens.get(token)
            self.token_log.append(user.username if user else None)
        if user is None:
            return {"user": {}, "error": "[invalid bearer token, token lookup failed]"}
        return {"authenticated": True, "user": user.info(), "audiences": ["https://kubernetes.default.svc"]}

    @staticmethod
    def _invalid_access_review(spec: JsonDict) -> str:
        if ("resourceAttributes" in spec) == ("nonResourceAttributes" in spec):
            return ("spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or "
                    "resourceAttributes must be specified")
        if not spec.get("user") and not spec.get("groups"):
            return 'spec.user: Invalid value: "": at least one of user or group must be specified'
        return ""

    def _authorize(self, spec: JsonDict) -> JsonDict:
        attributes = spec.get("resourceAttributes") or {}
        user, groups = spec.get("user", ""), list(spec.get("groups") or ())
        with self._lock:
            self.access_log.append(spec)
            rule = next((r for r in self._rules if r.matches(user, groups, attributes)), None)
        if rule is None:
            return {"allowed": False}
        if not rule.allowed:
            return {"allowed": False, "denied": True, "reason": f"denied by the sandbox rule for {rule.subject!r}"}
        where = f"namespace {rule.namespace!r}" if rule.namespace else "all namespaces"
        return {"allowed": True, "reason": f"allowed by the sandbox rule for {rule.subject!r} in {where}"}
