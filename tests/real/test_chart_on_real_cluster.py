"""The chart on a real API server: `helm install` into the control plane built from Go modules, then the
controller, the receiver and the API run here, each as its chart ServiceAccount (TokenRequest tokens), with
PostgreSQL, Apache Kafka and the Stripe fake on 127.0.0.1 (chart_release.py says what replaces the pods).

The admission webhook is the chart's ValidatingWebhookConfiguration with its clientConfig pointed at the
controller's admission server here (a URL on 127.0.0.1 and that server's CA as caBundle) instead of the
Service no pod backs. A payment, a refund, a cancel and admission refusals then work with exactly the
chart's RBAC; SubjectAccessReviews show that no ServiceAccount may do more than the table below, and the
API server's audit log shows that each one used every permission it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubepay.config import Topics
from kubepay.sandbox.apache_kafka import ApacheKafka
from kubepay.sandbox.kube_controls import service_account_token
from kubepay.sandbox.postgres import PostgresServer
from kubepay.sandbox.processes import KubepayProcess
from kubepay.sandbox.realcluster import RealCluster
from kubepay.sandbox.stripe_fake import TEST_CARDS, StripeFake
from tests.chart.tools import ensure_tools
from tests.contracts import ApiClient
from tests.helpers import (
    GROUP,
    PLURAL,
    VERSION,
    Kube,
    confirm_and_notify,
    create_refund,
    deliver,
    refund_phase_is,
    stripe_event,
    stripe_id,
    wait_for,
)
from tests.kubectl import Kubectl
from tests.real.chart_release import REPO, Release, admission_certificate

NAMESPACE = "kubepay"  # the release's, where the API creates payments
SHOP = "shop"  # a client of the API, in its own namespace
WEBHOOK_SECRET = "whsec_chart0123456789abcdef"

# What each chart ServiceAccount may do (default values, api.enabled with api.auth.mode serviceaccount, no
# watchNamespace): "verb resource[/subresource]" with the API group as a suffix when it is not core.
ALLOWED = {
    "kubepay-controller": {
        *(f"{verb} {kind}.kubepay.io" for verb in ("list", "watch", "patch") for kind in ("paymentintents",
                                                                                          "paymentrefunds")),
        *(f"{verb} {kind}/status.kubepay.io" for verb in ("get", "patch") for kind in ("paymentintents",
                                                                                       "paymentrefunds")),
        "update paymentintents/finalizers.kubepay.io", "create secrets", "create events",
        "list customresourcedefinitions.apiextensions.k8s.io", "watch customresourcedefinitions.apiextensions.k8s.io",
    },
    "kubepay-receiver": {
        f"{verb} {kind}/status.kubepay.io" for verb in ("get", "patch") for kind in ("paymentintents",
                                                                                     "paymentrefunds")
    },
    "kubepay-api": {
        "create paymentintents.kubepay.io", "create paymentrefunds.kubepay.io",
        "get paymentintents/status.kubepay.io", "get paymentrefunds/status.kubepay.io", "get secrets",
        "create tokenreviews.authentication.k8s.io", "create subjectaccessreviews.authorization.k8s.io",
    },
}
# Granted, and checked by the API server on a request of another verb, so the audit log never shows them used.
CHECKED_NOT_REQUESTED = {
    # OwnerReferencesPermissionEnforcement (on in RealCluster) checks it when the controller creates the
    # client-secret Secret with blockOwnerDeletion on its ownerReference.
    "kubepay-controller": {"update paymentintents/finalizers.kubepay.io"},
}
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
# Everything asked about: kubepay's kinds and the ones a compromised component would want.
PROBED = (
    *(f"{kind}{sub}.kubepay.io" for kind in ("paymentintents", "paymentrefunds")
      for sub in ("", "/status", "/finalizers")),
    "secrets", "configmaps", "pods", "pods/exec", "serviceaccounts", "serviceaccounts/token", "events",
    "events.events.k8s.io", "namespaces", "customresourcedefinitions.apiextensions.k8s.io",
    "tokenreviews.authentication.k8s.io", "subjectaccessreviews.authorization.k8s.io",
    "roles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io", "validatingwebhookconfigurations.admissionregistration.k8s.io",
    "leases.coordination.k8s.io", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev", "deployments.apps",
)
CLUSTER_SCOPED = {"namespaces", "customresourcedefinitions", "tokenreviews", "subjectaccessreviews",
                  "clusterrolebindings", "validatingwebhookconfigurations", "clusterkopfpeerings"}


@dataclass
class Installed:
    release: Release
    admin: Kube
    kubectl: Kubectl
    stripe: StripeFake
    processes: dict[str, KubepayProcess]
    env: dict[str, dict[str, str]]
    migrated: str

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.env['receiver']['PAYMENT_HTTP_PORT']}/payments/webhook"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.env['api']['KUBEPAY_API_PORT']}"


@pytest_asyncio.fixture(scope="module")
async def installed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Installed]:
    workdir = tmp_path_factory.mktemp("chart")
    tools = await asyncio.to_thread(ensure_tools)
    cluster, postgres, kafka, stripe = RealCluster(), PostgresServer(), ApacheKafka(), StripeFake()
    async with contextlib.AsyncExitStack() as stack:
        async with asyncio.TaskGroup() as starting:  # one failing cancels the others; the stack stops the started
            for part in (cluster, postgres, kafka, stripe):
                starting.create_task(stack.enter_async_context(part))
        database_url = await postgres.create_database("payments")
        await kafka.create_topics(Topics().all())
        admin = await Kube.connect(str(cluster.kubeconfig))
        stack.push_async_callback(admin.close)
        release = Release(cluster, tools["helm"], "kubepay", NAMESPACE, workdir)
        await release.install({
            "image": {"repository": "kubepay.invalid/kubepay", "tag": "never-pulled"},
            "stripe": {"secretKey": stripe.api_key, "webhookSecret": WEBHOOK_SECRET, "apiBase": stripe.url},
            "database": {"url": database_url},
            "kafka": {"brokers": kafka.bootstrap_servers},
            "api": {"enabled": True, "auth": {"mode": "serviceaccount"}},
        })
        await wait_for(lambda: _served(admin), timeout=30, what="the chart's CRDs to be served")
        migrated = await release.migrate(admin.api)
        workloads = await release.workloads(admin.api)
        cert_dir, ca_bundle = await asyncio.to_thread(admission_certificate, workdir / "admission")
        env = {name: await release.environment(admin.api, work) for name, work in workloads.items()}
        env["controller"]["KUBEPAY_ADMISSION_CERT_DIR"] = str(cert_dir)
        processes: dict[str, KubepayProcess] = {}
        stack.push_async_callback(lambda: asyncio.gather(*(p.stop() for p in processes.values())))
        for name in ("controller", "receiver", "api"):
            processes[name] = await release.start(admin.api, workloads[name], env[name])
        await _point_admission_here(admin, int(env["controller"]["KUBEPAY_ADMISSION_PORT"]), ca_bundle)
        yield Installed(release, admin, Kubectl(tools["kubectl"], str(cluster.kubeconfig), NAMESPACE,
                                                workdir / "kube-cache"),
                        stripe, processes, env, migrated)


async def _served(admin: Kube) -> bool:
    try:
        await admin.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
    except ApiException as exc:
        if exc.status in (404, 429):
            return False
        raise
    return True


async def _point_admission_here(admin: Kube, port: int, ca_bundle: str) -> None:
    """The chart's webhooks, with each clientConfig a URL on the local admission server instead of the
    Service; everything else (rules, paths, failurePolicy, timeouts) stays as the chart made it."""
    registration = client.AdmissionregistrationV1Api(admin.api)
    [config] = (await registration.list_validating_webhook_configuration(
        label_selector="app.kubernetes.io/instance=kubepay")).items
    patch = [{"op": "replace", "path": f"/webhooks/{i}/clientConfig",
              "value": {"url": f"https://127.0.0.1:{port}{hook.client_config.service.path}", "caBundle": ca_bundle}}
             for i, hook in enumerate(config.webhooks)]
    await registration.patch_validating_webhook_configuration(config.metadata.name, patch)


@dataclass
class Story:
    """What a shop, a support agent and an operator did through the installed chart."""

    refund: dict[str, Any]
    failed_refund: dict[str, Any]
    canceled_intent: dict[str, Any]
    refusals: dict[str, ApiException]
    kubectl_wait: str
    table: dict[str, str]


@pytest_asyncio.fixture(scope="module")
async def story(installed: Installed) -> Story:
    admin, stripe_client = installed.admin, installed.stripe.client()
    # A shop pays through the API with its own ServiceAccount token, allowed to create PaymentIntents there.
    await admin.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=SHOP)))
    shop_token = await service_account_token(admin.api, SHOP, "checkout")
    await _grant(admin, f"system:serviceaccount:{SHOP}:checkout", "create", "paymentintents")
    api = await ApiClient.connect(installed.api_url, shop_token)
    status, created = await api.call("POST", "/payments/intent",
                                     body={"order_id": "7001", "amount": 2500, "currency": "usd"})
    assert status == 201, created
    name = created["name"]
    intent_id = await stripe_id(admin, NAMESPACE, name)
    paid = await confirm_and_notify(stripe_client, intent_id, TEST_CARDS["success"], installed.webhook_url,
                                    WEBHOOK_SECRET)
    assert paid["client_secret"] == created["client_secret"]
    waited = (await installed.kubectl("wait", f"pi/{name}", "--for=condition=Ready", "--timeout=60s",
                                      timeout=90)).ok()
    _, row = await installed.kubectl.row_until("pi", name, {"PHASE": "Succeeded", "READY": "True"}, wide=True)

    async def succeeded_row() -> dict[str, Any] | None:
        code, body = await api.call("GET", f"/payments/{created['payment_id']}")
        return body if code == 200 and body["status"] == "succeeded" else None
    await wait_for(succeeded_row, timeout=30, what="the succeeded payments row through the API")

    # The shop refunds part of it through the API, and repeats the request (a client retry).
    refund_call = {"body": {"amount": 1000, "reason": "requested_by_customer"},
                   "headers": {"Idempotency-Key": "goodwill-7001"}}
    status, requested = await api.call("POST", f"/payments/{created['payment_id']}/refunds", **refund_call)
    assert status == 201, requested
    assert (await api.call("POST", f"/payments/{created['payment_id']}/refunds", **refund_call))[0] == 200
    refund = await refund_phase_is(admin, NAMESPACE, requested["name"], "Succeeded", timeout=30)
    await admin.phase_is(NAMESPACE, name, "PartiallyRefunded", timeout=30)
    # Days later Stripe reports to the receiver that the refund failed after all (the card expired).
    stripe_refund = (await stripe_client.v1.refunds.retrieve_async(refund["status"]["stripe"]["refundId"])).to_dict()
    event = stripe_event("refund.failed", {**stripe_refund, "status": "failed",
                                           "failure_reason": "expired_or_canceled_card"}, created=int(time.time()) + 5)
    assert (await deliver(installed.webhook_url, event, WEBHOOK_SECRET))[1]["outcome"] == "applied"
    failed_refund = await refund_phase_is(admin, NAMESPACE, requested["name"], "Failed", timeout=30)

    # An operator deletes an unpaid one: Stripe's intent is canceled, kube-controller-manager collects its Secret.
    await admin.create_pi(NAMESPACE, "abandoned", {"orderId": "7002", "amount": 900, "currency": "usd"})
    abandoned_id = await stripe_id(admin, NAMESPACE, "abandoned")
    pi = await admin.wait_pi(NAMESPACE, "abandoned", lambda o: bool(o["status"].get("clientSecretRef")),
                             what="the client-secret Secret")
    secret_name = pi["status"]["clientSecretRef"]["name"]
    await admin.core.read_namespaced_secret(secret_name, NAMESPACE)
    await admin.custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "abandoned")
    await wait_for(lambda: _gone(admin.core.read_namespaced_secret(secret_name, NAMESPACE)), timeout=60,
                   what="the garbage collector to delete the client-secret Secret")
    canceled = (await stripe_client.v1.payment_intents.retrieve_async(abandoned_id)).to_dict()

    # Admission refuses, through the webhook the API server calls.
    with pytest.raises(ApiException) as amount:
        await admin.create_pi(NAMESPACE, "krona", {"orderId": "7003", "amount": 550, "currency": "isk"})
    with pytest.raises(ApiException) as over_refund:
        await create_refund(admin, NAMESPACE, "too-much", {"paymentIntentName": name, "amount": 5000})
    refusals = {"amount": amount.value, "refund": over_refund.value}
    return Story(refund, failed_refund, canceled, refusals, waited.stdout, row)


async def _gone(read: Any) -> bool:
    try:
        await read
    except ApiException as exc:
        return exc.status == 404
    return False


async def _grant(admin: Kube, user: str, verb: str, resource: str) -> None:
    """What the README tells an API client's owner to do: a Role and RoleBinding in the API's namespace."""
    rbac = client.RbacAuthorizationV1Api(admin.api)
    role = {"metadata": {"name": "pay"}, "rules": [{"apiGroups": [GROUP], "resources": [resource], "verbs": [verb]}]}
    await rbac.create_namespaced_role(NAMESPACE, role)
    await rbac.create_namespaced_role_binding(NAMESPACE, {
        "metadata": {"name": "pay"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                 "name": "pay"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})


async def test_helm_install_without_hooks_and_the_migration_run_here(installed: Installed) -> None:
    status = yaml.safe_load(await installed.release.helm_command("status", "kubepay", "-n", NAMESPACE, "-o", "yaml"))
    assert status["info"]["status"] == "deployed"
    assert installed.migrated.strip() == "kubepay migrate: database migrated to head"
    crds = await client.ApiextensionsV1Api(installed.admin.api).list_custom_resource_definition()
    assert {crd.metadata.name for crd in crds.items} == {"paymentintents.kubepay.io", "paymentrefunds.kubepay.io"}


async def test_a_payment_a_refund_and_a_cancel_work_with_exactly_the_charts_rbac(story: Story) -> None:
    assert story.kubectl_wait.strip().endswith("condition met")
    assert (story.table["PHASE"], story.table["READY"], story.table["SYNCED"]) == ("Succeeded", "True", "True")
    assert story.refund["status"]["phase"] == "Succeeded"
    assert story.failed_refund["status"]["failure"]["message"] == "expired_or_canceled_card"
    assert story.canceled_intent["status"] == "canceled"


async def test_admission_refusals_come_from_the_registered_webhook(story: Story) -> None:
    amount, refund = story.refusals["amount"], story.refusals["refund"]
    assert amount.status == 422, amount.body
    assert json.loads(amount.body)["message"].startswith(
        'admission webhook "paymentintents.validate.kubepay.io" denied the request: spec.amount: must be a '
        "multiple of 100 for ISK")
    assert refund.status == 422, refund.body
    assert json.loads(refund.body)["message"].startswith(
        'admission webhook "paymentrefunds.validate.kubepay.io" denied the request: ')


async def test_each_service_account_may_do_what_the_chart_says_and_nothing_more(installed: Installed) -> None:
    authorization = client.AuthorizationV1Api(installed.admin.api)
    for account, allowed in ALLOWED.items():
        user = f"system:serviceaccount:{NAMESPACE}:{account}"
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"]
        found = set()
        for probe in PROBED:
            resource, _, group = probe.partition(".")
            resource, _, subresource = resource.partition("/")
            for namespace in (NAMESPACE, SHOP):
                for verb in VERBS:
                    review = await authorization.create_subject_access_review({
                        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                        "spec": {"user": user, "groups": groups, "resourceAttributes": {
                            "verb": verb, "group": group, "resource": resource, "subresource": subresource,
                            "namespace": "" if resource in CLUSTER_SCOPED else namespace}}})
                    if review.status.allowed:
                        found.add(f"{verb} {probe}")
        assert found == allowed, f"{account}: more {sorted(found - allowed)}, less {sorted(allowed - found)}"
    receiver = f"system:serviceaccount:{NAMESPACE}:kubepay-receiver"
    review = await authorization.create_subject_access_review({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": receiver, "resourceAttributes": {"verb": "get", "resource": "secrets",
                                                          "namespace": NAMESPACE}}})
    assert review.status.allowed is False


async def test_every_permission_is_used(installed: Installed, story: Story) -> None:
    used: dict[str, set[str]] = {account: set() for account in ALLOWED}
    for event in installed.release.cluster.audit_events():
        account = event["user"]["username"].rpartition(":")[2]
        ref = event.get("objectRef") or {}
        if account not in used or not ref.get("resource"):
            continue
        name = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used[account].add(f"{event['verb']} {name}" + (f".{ref['apiGroup']}" if ref.get("apiGroup") else ""))
    beyond = {account: sorted(used[account] - allowed) for account, allowed in ALLOWED.items()}
    unused = {account: sorted(allowed - used[account] - CHECKED_NOT_REQUESTED.get(account, set()))
              for account, allowed in ALLOWED.items()}
    assert not any(beyond.values()), f"used without a grant (the API server refused them): {beyond}"
    assert not any(unused.values()), f"granted but never used: {unused}"


async def test_kubectl_explain_and_a_server_side_apply_of_the_examples(installed: Installed) -> None:
    kubectl, admin = installed.kubectl, installed.admin
    explained = (await kubectl("explain", "paymentintent.spec")).ok().stdout
    assert "KIND:       PaymentIntent" in explained
    assert "orderId\t<string> -required-" in explained and "amount\t<integer> -required-" in explained

    # GitOps applies examples/ with server-side apply: the payments are taken; the refund of a payment nobody has
    # paid yet is refused by admission, and taken once the payment succeeded.
    apply = ("apply", "--server-side", "--field-manager=gitops", "-f", str(REPO / "examples"))
    early = await kubectl(*apply)
    assert early.returncode != 0
    assert 'paymentintent.kubepay.io/order-1111 serverside-applied' in early.stdout
    assert 'paymentintent.kubepay.io/order-2222 serverside-applied' in early.stdout
    assert "PaymentIntent 'order-1111' has not succeeded" in early.stderr, early.stderr
    intent_id = await stripe_id(admin, NAMESPACE, "order-1111")
    await confirm_and_notify(installed.stripe.client(), intent_id, TEST_CARDS["success"], installed.webhook_url,
                             WEBHOOK_SECRET)
    await admin.phase_is(NAMESPACE, "order-1111", "Succeeded", timeout=30)
    again = (await kubectl(*apply)).ok()
    assert "paymentrefund.kubepay.io/order-1111-refund-1 serverside-applied" in again.stdout
    await refund_phase_is(admin, NAMESPACE, "order-1111-refund-1", "Succeeded", timeout=30)
    pi = await admin.get_pi(NAMESPACE, "order-1111")
    assert pi is not None and "gitops" in {m["manager"] for m in pi["metadata"]["managedFields"]}

    # The CEL rule keeps orderId immutable, for server-side apply as for every other write.
    changed = yaml.safe_load((REPO / "examples" / "paymentintent.yaml").read_text())
    changed["spec"]["orderId"] = "1112"
    refused = await kubectl("apply", "--server-side", "--field-manager=gitops", "-f", "-",
                            stdin=yaml.safe_dump(changed))
    assert refused.returncode != 0 and "spec.orderId: Invalid value: \"1112\": orderId is immutable" in \
        refused.stderr, refused.stderr
