"""Who may call `kubepay api` (KUBEPAY_API_AUTH): a shared bearer token, the caller's ServiceAccount, or anyone.

`serviceaccount` asks the API server twice per new token (TokenReview, then SubjectAccessReview for `create`
on `paymentintents` in the API's namespace) and remembers the answer briefly, keyed by the token's hash.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from kubernetes_asyncio.client.exceptions import ApiException

from kubepay.config import Settings
from kubepay.kube.client import KubeClient, KubeUnavailable, TokenRefused
from kubepay.model.resources import GROUP, PAYMENT_INTENTS

log = logging.getLogger(__name__)

REQUIRED_VERB = "create"  # every route needs this on paymentintents in the API's namespace
CACHE_SECONDS = 30.0
CACHE_SIZE = 1024
TOKEN = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class Refusal:
    """Why a request may not pass: 401 (who are you?) or 403 (you may not)."""

    status: int
    message: str


class Authenticator(Protocol):
    async def check(self, request: web.Request) -> Refusal | None:
        """None lets the request through."""


def bearer_token(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer <token>`; None without one, or for one that is not printable ASCII
    (tokens never are; such bytes arrive undecodable)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and TOKEN.fullmatch(token) else None


class SharedToken:
    """`token`: the one bearer token in KUBEPAY_API_TOKEN."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    async def check(self, request: web.Request) -> Refusal | None:
        token = bearer_token(request)
        if token is None or not hmac.compare_digest(token.encode(), self._expected):
            return Refusal(401, "missing or invalid bearer token")
        return None


class Anyone:
    """`none`: no authentication; a NetworkPolicy decides who can connect."""

    async def check(self, request: web.Request) -> Refusal | None:
        return None


class Decisions:
    """A bounded memory of recent answers per token hash; entries expire after `seconds`."""

    def __init__(self, seconds: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds, self._size, self._clock = seconds, size, clock
        self._entries: OrderedDict[bytes, tuple[float, Refusal | None]] = OrderedDict()

    def get(self, key: bytes) -> tuple[bool, Refusal | None]:
        """(found, decision)."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            self._entries.pop(key, None)
            return False, None
        return True, entry[1]

    def put(self, key: bytes, decision: Refusal | None) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (self._clock() + self._seconds, decision)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)  # the oldest answer goes first


class ServiceAccountTokens:
    """`serviceaccount`: the caller's own ServiceAccount token, checked by the API server (no shared secret)."""

    def __init__(self, kube: KubeClient, namespace: str, decisions: Decisions | None = None) -> None:
        self._kube, self._namespace = kube, namespace
        self._decisions = decisions or Decisions(CACHE_SECONDS, CACHE_SIZE)

    async def check(self, request: web.Request) -> Refusal | None:
        token = bearer_token(request)
        if token is None:
            return Refusal(401, "missing bearer token: send your pod's ServiceAccount token "
                                "(Authorization: Bearer <token>)")
        key = hashlib.sha256(token.encode()).digest()
        found, decision = self._decisions.get(key)
        if not found:
            decision = await self._decide(token)
            self._decisions.put(key, decision)
        return decision

    async def _decide(self, token: str) -> Refusal | None:
        try:
            who = await self._kube.review_token(token)
            allowed, reason = await self._kube.review_access(who, REQUIRED_VERB, PAYMENT_INTENTS, self._namespace)
        except TokenRefused as exc:
            log.info("a bearer token was refused by the Kubernetes TokenReview: %s", exc)
            return Refusal(401, "invalid bearer token: the Kubernetes API server does not accept it")
        except ApiException as exc:  # our own ServiceAccount may not ask: a deployment error, not the caller's
            log.error("the Kubernetes API refused our TokenReview/SubjectAccessReview (HTTP %s): kubepay api's "
                      "ServiceAccount needs create on tokenreviews and subjectaccessreviews", exc.status)
            raise KubeUnavailable(f"review refused with HTTP {exc.status}") from None
        if allowed:
            return None
        what = f"{REQUIRED_VERB} {PAYMENT_INTENTS}.{GROUP} in namespace {self._namespace}"
        log.info("%s may not %s: %s", who.username, what, reason or "no rule allows it")
        return Refusal(403, f"{who.username} may not {what}; grant it with a Role and RoleBinding")


def authenticator(settings: Settings, kube: KubeClient) -> Authenticator:
    if settings.api_auth == "serviceaccount":
        return ServiceAccountTokens(kube, settings.api_namespace)
    if settings.api_auth == "none":
        log.warning("KUBEPAY_API_AUTH=none: the payments API accepts every request without authentication; "
                    "only a NetworkPolicy (the chart's api.auth.allowedClientLabels) limits who can call it")
        return Anyone()
    return SharedToken(settings.api_token)
