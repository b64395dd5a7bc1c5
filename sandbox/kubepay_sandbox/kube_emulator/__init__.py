"""An in-memory Kubernetes API server for tests, ``kubepay-sandbox up``, the demo and benchmarks.

:class:`KubeEmulator` serves the CRDs it is given plus the built-in resources that kopf and
kubepay use (``v1`` namespaces, secrets, configmaps, events) over plain HTTP on 127.0.0.1, and
behaves like a real API server wherever kopf, kubernetes_asyncio and kubectl can tell:
uid/resourceVersion/generation/creationTimestamp (a new generation for a spec change and for a marked
deletion), ``generateName``, 201 on create, 409 on a stale resourceVersion, merge/JSON/strategic patches
(a failed JSON-patch ``test`` is 422),
the status subresource kept apart from the main object, CRD schema validation, pruning and
defaulting, finalizers and ``deletionTimestamp``, garbage collection through ownerReferences,
typed lists, label and field selectors, and watches that resume from a resourceVersion
(410 Gone when it is older than the in-memory history). For kubectl it also serves
``/openapi/v3`` (every group-version: the CRDs' schemas and the object paths, whose writes take
``fieldValidation``, so that kubectl's default ``--validate=strict`` leaves validation to the
server, and ``kubectl explain`` works), honours ``fieldValidation`` (``Strict`` refuses unknown
fields of custom resources, ``Warn``, the default, prunes them with a ``Warning`` header), and
renders tables with the server's columns (CRD printer columns; events, namespaces, secrets and
configmaps as the real server prints them).

How it uses kmock: discovery (``/api``, ``/apis``, ``/apis/GROUP/VERSION``, ``/version``) and
error rendering come from kmock's :class:`kmock.KubernetesScaffold`, subclassed in ``discovery``. The
object requests (``.../PLURAL[/NAME[/status]]``) are handled wholesale by this package rather
than by :class:`kmock.KubernetesEmulator`, because nearly every one of the emulator's object
semantics had to change (it stores every version of every object, parses
``/api/v1/namespaces`` as a broken path, keeps no resourceVersion, mixes status into the main
object, ignores selectors and watch starting points, answers 500 on a failed patch test),
and its per-object history grows without bound, which a benchmark cannot afford.
The handler is served by aiohttp's low-level server directly instead of :class:`kmock.Server`,
because that server must be entered only once, patches aiohttp's DNS resolution process-wide
(which must be exited in LIFO order) and opens a client session we do not need; here
:meth:`KubeEmulator.stop` and :meth:`KubeEmulator.start` can alternate freely on one port.

TokenReview and SubjectAccessReview are answered by :mod:`~kubepay_sandbox.kube_emulator.reviews`
(``KubeEmulator.reviews``) from the tokens and access rules the harness gives it, not from RBAC objects.

Known gaps against a real API server: CEL rules other than ``self == oldSelf`` transition rules
are not evaluated; no admission webhooks, RBAC, managedFields or server-side-apply field
ownership (``application/apply-patch+yaml`` is served as a create-or-merge); strategic merge
patch is a JSON merge patch (``$``-directives dropped); ``propagationPolicy=Foreground`` acts
like Background; an object whose owners never existed is not collected; a deleted namespace
takes its objects with it but disappears at once instead of staying ``Terminating``; no
``/openapi/v2`` and no protobuf (kubectl's typed commands such as ``kubectl create secret`` send
protobuf and fail; ``kubectl apply`` and ``get``/``patch``/``wait``/``delete`` use JSON); unknown
fields are detected only in custom resources (built-in objects are not schema-checked).

The modules, one concern each: ``emulator`` (:class:`KubeEmulator`: the parts put together, its thread, what
tests call), ``routing`` (path and method to a verb, the answer), ``storage`` (objects, resourceVersions,
history, watch subscriptions), ``resources`` (built-in and CRD resources), ``listing``, ``writes`` (create,
update, patch), ``deletion`` (finalizers, garbage collection), ``watch``, ``validation`` (schema, CEL, labels
and annotations, names), ``pruning`` (pruning, defaults, unknown fields), ``patches``, ``selectors``,
``admission`` (denials), ``reviews``, ``tables`` (printer columns), ``openapi``, ``discovery`` (kmock),
``errors`` (Status and field errors), ``query`` (query parameters), ``request_warnings`` (``Warning`` headers).
"""

from kubepay_sandbox.kube_emulator.emulator import KubeEmulator
from kubepay_sandbox.kube_emulator.validation import validate_custom_resource

__all__ = ["KubeEmulator", "validate_custom_resource"]
