"""Write what Stripe reported into a resource's status without ever moving it backwards.

Every write carries the resourceVersion it was computed from: if anyone wrote in between, the API
server answers 409 and the patch is recomputed from the fresh object.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kubepay import logs
from kubepay.kube.client import Conflict, KubeClient
from kubepay.model.conditions import observed, sentence, set_condition
from kubepay.model.observations import Observation, recorded_by
from kubepay.model.resources import Meta, Resource

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 10

# Computes a status merge patch from the current object; None means nothing to write.
PatchFn = Callable[[dict[str, Any]], dict[str, Any] | None]


async def write_status(kube: KubeClient, plural: str, namespace: str, name: str, uid: str | None,
                       compute: PatchFn, first_read: Awaitable[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """Read, compute, write with a precondition; retry on conflicts. Returns the patch written, if any.

    `first_read`: the object as read already (started earlier), used for the first try.
    """
    read = first_read
    for _ in range(MAX_CONFLICT_RETRIES):
        body = await (read if read is not None else kube.get_custom(plural, namespace, name))
        read = None
        if uid is not None and body["metadata"].get("uid") != uid:
            log.info("update for a replaced %s ignored: %s/%s", plural, namespace, name,
                     extra=logs.about({"namespace": namespace, "name": name, "uid": uid}))
            return None
        patch = compute(body)
        if not patch:
            return None
        try:
            await kube.patch_status(plural, namespace, name, patch, body["metadata"].get("resourceVersion"))
        except Conflict:
            continue
        return patch
    raise Conflict(f"status of {namespace}/{name} kept changing; gave up after {MAX_CONFLICT_RETRIES} tries")


async def write_not_synced(kube: KubeClient, resource: Resource, reason: str, message: str,
                           extra: dict[str, Any] | None = None, failed: bool = False) -> None:
    """Synced=False and Ready=False with the reason, plus `extra` status fields (a refusal, a failure).

    `failed`: the object can no longer succeed, so Failed=True too (what `kubectl wait --for=condition=Failed`
    waits for). No precondition: only the controller writes these, before Stripe holds anything to report.
    """
    meta, generation = resource.meta, resource.meta.generation
    message = sentence(message)
    conditions = set_condition(resource.status.conditions, "Synced", False, reason, message, generation)
    conditions = set_condition(conditions, "Ready", False, "Failed" if failed else reason, message, generation)
    if failed:
        conditions = set_condition(conditions, "Failed", True, reason, message, generation)
    await kube.patch_status(resource.plural, meta.namespace, meta.name,
                            {**(extra or {}), **observed(conditions, generation)}, None)


async def apply_observation(kube: KubeClient, plural: str, target: Meta, obs: Observation,
                            always: Mapping[str, Any] | None = None,
                            first_read: Awaitable[dict[str, Any]] | None = None) -> bool:
    """Apply `obs` to the resource if it is newer than what status holds, plus the `always` fields.

    For both kinds. Returns whether the observation is in status: applied now, or applied before by the same
    Stripe event (a concurrent duplicate delivery, or a redelivery after a crash), so the ledger records
    `applied` for it. An empty target uid applies to whatever object has the name.
    """
    applied = False

    def compute(body: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal applied
        status: dict[str, Any] = {**(body.get("status") or {}), **(always or {})}
        patch: dict[str, Any] = dict(always or {})
        if (change := obs.patch(status, body["metadata"].get("generation"))) is not None:
            applied = True
            patch.update(change)
        else:
            applied = recorded_by(status, obs.event_id)
        return patch or None

    await write_status(kube, plural, target.namespace, target.name, target.uid or None, compute, first_read)
    return applied
