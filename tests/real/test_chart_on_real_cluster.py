"""The chart on a real API server: `helm install` into the control plane built from Go modules, then the
controller, the receiver and the API run here, each as its chart ServiceAccount (TokenRequest tokens), with
PostgreSQL, Apache Kafka and the Stripe fake on 127.0.0.1 (chart_release.py says what replaces the pods).

The admission webhook is the chart's ValidatingWebhookConfiguration with its clientConfig pointed at the
controller's admission server here (a URL on 127.0.0.1 and that server's CA as caBundle) instead of the
Service no pod backs. In both variants below, a payment, a refund, a cancel and admission refusals then work
with exactly the chart's RBAC; SubjectAccessReviews show that no ServiceAccount may do more than the
variant's table says, and the API server's audit log shows that each one used every permission it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiokafka import AIOKafkaProducer
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from kubepay import __version__
from kubepay.config import Topics
from kubepay_sandbox.apache_kafka import ApacheKafka
from kubepay_sandbox.kube_controls import ClusterControls
from kubepay_sandbox.postgres import PostgresServer
from kubepay_sandbox.processes import KubepayProcess
from kubepay_sandbox.realcluster import RealCluster
from kubepay_sandbox.stripe_fake import TEST_CARDS, StripeFake
from tests.chart import monitoring
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

RELEASE = "kubepay"
RELEASE_NAMESPACE = "kubepay"
SHOP = "shop"  # a client of the API, in its own namespace
WEBHOOK_SECRET = "whsec_chart0123456789abcdef"
API_TOKEN = "api-token-0123456789abcdef"


def _grants(verbs: tuple[str, ...], *resources: str) -> set[str]:
    return {f"{verb} {resource}" for verb in verbs for resource in resources}


PAYMENTS = ("paymentintents.kubepay.io", "paymentrefunds.kubepay.io")
STATUS = ("paymentintents/status.kubepay.io", "paymentrefunds/status.kubepay.io")


@dataclass(frozen=True)
class Variant:
    """Chart values, and what each ServiceAccount may do then: "verb resource[/subresource][.group]", namespaced
    grants (in `payments`, or in every namespace when the controller watches them all) and cluster-scoped ones."""

    values: dict[str, Any]
    payments: str  # the namespace of the payments, the API's and the one the controller watches
    namespaced: dict[str, set[str]]
    cluster: dict[str, set[str]] = field(default_factory=dict)

    @property
    def cluster_wide(self) -> bool:
        return not self.values["controller"].get("watchNamespace")


CONTROLLER = {
    *_grants(("list", "watch"), *PAYMENTS), "patch paymentintents.kubepay.io", *_grants(("get", "patch"), *STATUS),
    "update paymentintents/finalizers.kubepay.io", "create secrets", "create events",
}
RECEIVER = _grants(("get", "patch"), *STATUS)
API = {*_grants(("create",), *PAYMENTS), *_grants(("get",), *STATUS), "get secrets"}
CRDS = _grants(("list", "watch"), "customresourcedefinitions.apiextensions.k8s.io")
VARIANTS = {
    # The defaults, with the API on in serviceaccount mode.
    "cluster-wide": Variant(
        values={"controller": {}, "api": {"enabled": True, "auth": {"mode": "serviceaccount"}}},
        payments=RELEASE_NAMESPACE,
        namespaced={"kubepay-controller": CONTROLLER, "kubepay-receiver": RECEIVER, "kubepay-api": API},
        cluster={"kubepay-controller": CRDS, "kubepay-api": {"create tokenreviews.authentication.k8s.io",
                                                             "create subjectaccessreviews.authorization.k8s.io"}},
    ),
    # One namespace, two replicas (kopf peering), the orders consumer, retention, the API in token mode.
    "one-namespace": Variant(
        values={"controller": {"watchNamespace": "payments", "replicas": 2, "ordersConsumer": {"enabled": True},
                               "retention": {"enabled": True}},
                "api": {"enabled": True, "token": API_TOKEN}},
        payments="payments",
        namespaced={"kubepay-controller": {*CONTROLLER, "create paymentintents.kubepay.io",
                                           *_grants(("delete",), *PAYMENTS),
                                           *_grants(("get", "list", "watch", "patch"), "kopfpeerings.kopf.dev")},
                    "kubepay-receiver": RECEIVER, "kubepay-api": API},
    ),
}
# Granted, and checked by the API server on a request of another verb, so the audit log never shows them used.
CHECKED_NOT_REQUESTED = {
    # OwnerReferencesPermissionEnforcement (on in RealCluster) checks it when the controller creates the
    # client-secret Secret with blockOwnerDeletion on its ownerReference.
    "kubepay-controller": {"update paymentintents/finalizers.kubepay.io"},
}
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
# Everything asked about: kubepay's kinds and the ones a compromised component would want.
NAMESPACED = (
    *(f"{kind}{sub}.kubepay.io" for kind in ("paymentintents", "paymentrefunds")
      for sub in ("", "/status", "/finalizers")),
    "secrets", "configmaps", "pods", "pods/exec", "serviceaccounts", "serviceaccounts/token", "events",
    "events.events.k8s.io", "roles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io",
    "leases.coordination.k8s.io", "kopfpeerings.kopf.dev", "deployments.apps",
)
CLUSTER_SCOPED = (
    "namespaces", "customresourcedefinitions.apiextensions.k8s.io", "tokenreviews.authentication.k8s.io",
    "subjectaccessreviews.authorization.k8s.io", "clusterrolebindings.rbac.authorization.k8s.io",
    "validatingwebhookconfigurations.admissionregistration.k8s.io", "clusterkopfpeerings.kopf.dev",
)


@dataclass
class Installed:
    variant: Variant
    release: Release
    admin: Kube
    kubectl: Kubectl
    stripe: StripeFake
    kafka: ApacheKafka
    processes: dict[str, KubepayProcess]
    env: dict[str, dict[str, str]]
    migrated: str

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.env['receiver']['PAYMENT_HTTP_PORT']}/payments/webhook"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.env['api']['KUBEPAY_API_PORT']}"


@pytest_asyncio.fixture(scope="module", params=list(VARIANTS))
async def installed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                    ) -> AsyncIterator[Installed]:
    variant = VARIANTS[request.param]
    workdir = tmp_path_factory.mktemp(request.param)
    tools = await asyncio.to_thread(ensure_tools)
    cluster, postgres, kafka, stripe = RealCluster(), PostgresServer(), ApacheKafka(), StripeFake()
    async with contextlib.AsyncExitStack() as stack:
        async with asyncio.TaskGroup() as starting:  # one failing cancels the others; the stack stops the started
            for part in (cluster, postgres, kafka, stripe):
                starting.create_task(stack.enter_async_context(part))
        database_url = await postgres.create_database("payments")
        topics = Topics()
        await kafka.create_topics([*topics.all(), topics.orders_created, topics.orders_dlq])
        admin = await Kube.connect(str(cluster.kubeconfig))
        stack.push_async_callback(admin.close)
        for namespace in {variant.payments, SHOP}:
            await admin.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        release = Release(cluster, tools["helm"], tools["kubectl"], RELEASE, RELEASE_NAMESPACE, workdir)
        await release.install({
            **variant.values,
            "image": {"repository": "kubepay.invalid/kubepay", "tag": "never-pulled"},
            "stripe": {"secretKey": stripe.api_key, "webhookSecret": WEBHOOK_SECRET, "apiBase": stripe.url},
            "database": {"url": database_url},
            "kafka": {"brokers": kafka.bootstrap_servers},
        })
        await wait_for(lambda: admin.serves_payments(variant.payments), timeout=30,
                       what="the chart's CRDs to be served")
        migrated = await release.run_hooks(admin.api)
        workloads = await release.workloads(admin.api)
        cert_dir, ca_bundle = await asyncio.to_thread(admission_certificate, workdir / "admission")
        env = {name: await release.environment(admin.api, work) for name, work in workloads.items()}
        env["controller"]["KUBEPAY_ADMISSION_CERT_DIR"] = str(cert_dir)
        processes: dict[str, KubepayProcess] = {}
        stack.push_async_callback(lambda: asyncio.gather(*(p.stop() for p in processes.values())))
        for name in ("controller", "receiver", "api"):
            processes[name] = await release.start(admin.api, workloads[name], env[name])
        await _point_admission_here(admin, int(env["controller"]["KUBEPAY_ADMISSION_PORT"]), ca_bundle)
        kubectl = Kubectl(tools["kubectl"], str(cluster.kubeconfig), variant.payments, workdir / "kube-cache")
        yield Installed(variant, release, admin, kubectl, stripe, kafka, processes, env, migrated)


async def _point_admission_here(admin: Kube, port: int, ca_bundle: str) -> None:
    """The chart's webhooks, with each clientConfig a URL on the local admission server instead of the
    Service; everything else (rules, paths, failurePolicy, timeouts, namespaceSelector) stays as the chart made it."""
    registration = client.AdmissionregistrationV1Api(admin.api)
    [config] = (await registration.list_validating_webhook_configuration(
        label_selector=f"app.kubernetes.io/instance={RELEASE}")).items
    patch = [{"op": "replace", "path": f"/webhooks/{i}/clientConfig",
              "value": {"url": f"https://127.0.0.1:{port}{hook.client_config.service.path}", "caBundle": ca_bundle}}
             for i, hook in enumerate(config.webhooks)]
    await registration.patch_validating_webhook_configuration(config.metadata.name, patch)


@dataclass
class Story:
    """What a shop, its support, an order system and an operator did through the installed chart."""

    refund: dict[str, Any]
    failed_refund: dict[str, Any]
    canceled_intent: dict[str, Any]
    ordered: dict[str, Any] | None
    retained: dict[str, Any] | None  # the API's answer about a payment whose resources retention deleted
    refusals: dict[str, ApiException]
    kubectl_wait: str
    table: dict[str, str]


@pytest_asyncio.fixture(scope="module")
async def story(installed: Installed) -> Story:
    admin, stripe_client, ns = installed.admin, installed.stripe.client(), installed.variant.payments
    api = await ApiClient.connect(installed.api_url, await _api_credential(installed))
    # A shop pays through the API.
    status, created = await api.call("POST", "/payments/intent",
                                     body={"order_id": "7001", "amount": 2500, "currency": "usd"})
    assert status == 201, created
    name = created["name"]
    intent_id = await stripe_id(admin, ns, name)
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
    refund = await refund_phase_is(admin, ns, requested["name"], "Succeeded", timeout=30)
    await admin.phase_is(ns, name, "PartiallyRefunded", timeout=30)
    # Days later Stripe reports to the receiver that the refund failed after all (the card expired).
    stripe_refund = (await stripe_client.v1.refunds.retrieve_async(refund["status"]["stripe"]["refundId"])).to_dict()
    event = stripe_event("refund.failed", {**stripe_refund, "status": "failed",
                                           "failure_reason": "expired_or_canceled_card"}, created=int(time.time()) + 5)
    assert (await deliver(installed.webhook_url, event, WEBHOOK_SECRET))[1]["outcome"] == "applied"
    failed_refund = await refund_phase_is(admin, ns, requested["name"], "Failed", timeout=30)

    # An operator deletes an unpaid one: Stripe's intent is canceled, kube-controller-manager collects its Secret.
    await admin.create_pi(ns, "abandoned", {"orderId": "7002", "amount": 900, "currency": "usd"})
    abandoned_id = await stripe_id(admin, ns, "abandoned")
    pi = await admin.wait_pi(ns, "abandoned", lambda o: bool(o["status"].get("clientSecretRef")),
                             what="the client-secret Secret")
    secret_name = pi["status"]["clientSecretRef"]["name"]
    await admin.core.read_namespaced_secret(secret_name, ns)
    await admin.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "abandoned")
    await wait_for(lambda: _gone(admin.core.read_namespaced_secret(secret_name, ns)), timeout=60,
                   what="the garbage collector to delete the client-secret Secret")
    canceled = (await stripe_client.v1.payment_intents.retrieve_async(abandoned_id)).to_dict()

    # An order system publishes orders.created, when the controller consumes it.
    ordered = None
    if installed.env["controller"].get("KUBEPAY_ORDERS_CONSUMER") == "true":
        await _publish_order(installed, "7004")
        ordered = await wait_for(lambda: admin.get_pi(ns, "order-7004"), timeout=30, what="the ordered payment")

    # With retention on, a one-off payment refunded in full: each resource has its own ttl and both go, the
    # refund first (a payment is kept while its refund is unfinished); the API answers from the row.
    retained = None
    if installed.variant.values["controller"].get("retention"):
        await admin.create_pi(ns, "one-off", {"orderId": "7005", "amount": 700, "currency": "usd",
                                              "ttlSecondsAfterFinished": 10})
        one_off = await confirm_and_notify(stripe_client, await stripe_id(admin, ns, "one-off"),
                                           TEST_CARDS["success"], installed.webhook_url, WEBHOOK_SECRET)
        paid_one_off = await admin.phase_is(ns, "one-off", "Succeeded", timeout=30)
        await create_refund(admin, ns, "one-off-back",
                            {"paymentIntentName": "one-off", "ttlSecondsAfterFinished": 0})
        for plural, gone in (("paymentrefunds", "one-off-back"), (PLURAL, "one-off")):
            read = functools.partial(admin.custom.get_namespaced_custom_object, GROUP, VERSION, ns, plural, gone)
            await wait_for(lambda read=read: _gone(read()), timeout=90, what=f"retention to delete {gone}")
        retained = (await api.call("GET", f"/payments/{paid_one_off['status']['paymentId']}"))[1]
        assert retained["provider_payment_id"] == one_off["id"]

    # Admission refuses, through the webhook the API server calls.
    with pytest.raises(ApiException) as amount:
        await admin.create_pi(ns, "krona", {"orderId": "7003", "amount": 550, "currency": "isk"})
    with pytest.raises(ApiException) as over_refund:
        await create_refund(admin, ns, "too-much", {"paymentIntentName": name, "amount": 5000})
    refusals = {"amount": amount.value, "refund": over_refund.value}
    return Story(refund, failed_refund, canceled, ordered, retained, refusals, waited.stdout, row)


async def _api_credential(installed: Installed) -> str:
    """The chart's token in token mode; otherwise the shop's own ServiceAccount token, allowed to create
    PaymentIntents in the API's namespace (as the README tells API clients' owners to do with a Role)."""
    if installed.env["api"]["KUBEPAY_API_AUTH"] == "token":
        return installed.env["api"]["KUBEPAY_API_TOKEN"]
    controls = ClusterControls(installed.admin.api, installed.release.cluster)
    await controls.allow(f"system:serviceaccount:{SHOP}:checkout", "create", "paymentintents", group=GROUP,
                         namespace=installed.variant.payments)
    return await controls.service_account_token(SHOP, "checkout")


async def _publish_order(installed: Installed, order_id: str) -> None:
    order = {"order_id": order_id, "user_id": "user-9", "total": "19.99", "currency": "USD",
             "items": [{"product_id": "sku-1", "quantity": 1, "price": "19.99"}]}
    producer = AIOKafkaProducer(bootstrap_servers=installed.kafka.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(installed.env["controller"]["KUBEPAY_TOPIC_ORDERS_CREATED"],
                                     json.dumps(order).encode(), key=order_id.encode())
    finally:
        await producer.stop()


async def _gone(read: Any) -> bool:
    try:
        await read
    except ApiException as exc:
        return exc.status == 404
    return False


async def test_helm_install_without_hooks_and_the_hooks_run_here(installed: Installed) -> None:
    status = yaml.safe_load(await installed.release.helm_command("status", RELEASE, "-n", RELEASE_NAMESPACE,
                                                                 "-o", "yaml"))
    assert status["info"]["status"] == "deployed"
    assert installed.migrated.strip() == "kubepay migrate: database migrated to head"
    crds = await client.ApiextensionsV1Api(installed.admin.api).list_custom_resource_definition()
    kubepay_crds = {crd.metadata.name for crd in crds.items if crd.spec.group == GROUP}
    assert kubepay_crds == {"paymentintents.kubepay.io", "paymentrefunds.kubepay.io"}


async def test_a_payment_a_refund_and_a_cancel_work_with_exactly_the_charts_rbac(story: Story) -> None:
    assert story.kubectl_wait.strip().endswith("condition met")
    assert (story.table["PHASE"], story.table["READY"], story.table["SYNCED"]) == ("Succeeded", "True", "True")
    assert story.refund["status"]["phase"] == "Succeeded"
    assert story.failed_refund["status"]["failure"]["message"] == "expired_or_canceled_card"
    assert story.canceled_intent["status"] == "canceled"


async def test_the_orders_consumer_creates_payments_in_its_namespace(story: Story) -> None:
    if story.ordered is None:
        pytest.skip("the orders consumer is off in this variant (the default)")
    assert (story.ordered["spec"]["amount"], story.ordered["spec"]["currency"]) == (1999, "usd")
    assert story.ordered["metadata"]["labels"]["kubepay.io/source"] == "orders-consumer"


async def test_retention_deletes_a_finished_payment_and_its_refund_and_the_row_stays(story: Story) -> None:
    if story.retained is None:
        pytest.skip("retention is off in this variant (the default)")
    assert (story.retained["status"], story.retained["amount_refunded"]) == ("refunded", 700)


async def test_admission_refusals_come_from_the_registered_webhook(story: Story) -> None:
    amount, refund = story.refusals["amount"], story.refusals["refund"]
    assert amount.status == 422, amount.body
    assert json.loads(amount.body)["message"].startswith(
        'admission webhook "paymentintents.validate.kubepay.io" denied the request: spec.amount: must be a '
        "multiple of 100 for ISK")
    assert refund.status == 422, refund.body
    assert json.loads(refund.body)["message"].startswith(
        'admission webhook "paymentrefunds.validate.kubepay.io" denied the request: ')


async def _allowed(installed: Installed, account: str, probe: str, verb: str, namespace: str) -> bool:
    resource, _, group = probe.partition(".")
    resource, _, subresource = resource.partition("/")
    review = await client.AuthorizationV1Api(installed.admin.api).create_subject_access_review({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": f"system:serviceaccount:{RELEASE_NAMESPACE}:{account}",
                 "groups": ["system:serviceaccounts", f"system:serviceaccounts:{RELEASE_NAMESPACE}",
                            "system:authenticated"],
                 "resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                        "subresource": subresource, "namespace": namespace}}})
    return bool(review.status.allowed)


async def test_each_service_account_may_do_what_the_chart_says_and_nothing_more(installed: Installed) -> None:
    variant = installed.variant
    found: dict[tuple[str, str], set[str]] = {}
    for account in variant.namespaced:
        for namespace in (variant.payments, SHOP, ""):
            probes = CLUSTER_SCOPED if namespace == "" else NAMESPACED
            found[account, namespace] = {f"{verb} {probe}" for probe in probes for verb in VERBS
                                         if await _allowed(installed, account, probe, verb, namespace)}
    expected = {}
    for account, namespaced in variant.namespaced.items():
        expected[account, variant.payments] = namespaced
        expected[account, SHOP] = namespaced if variant.cluster_wide else set()
        expected[account, ""] = variant.cluster.get(account, set())
    assert found == expected
    assert not await _allowed(installed, "kubepay-receiver", "secrets", "get", variant.payments)


async def test_each_service_account_used_every_permission_it_has(installed: Installed, story: Story) -> None:
    variant = installed.variant
    used: dict[str, set[str]] = {account: set() for account in variant.namespaced}
    for event in installed.release.cluster.audit_events():
        account = event["user"]["username"].rpartition(":")[2]
        ref = event.get("objectRef") or {}
        if account not in used or not ref.get("resource"):
            continue
        name = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used[account].add(f"{event['verb']} {name}" + (f".{ref['apiGroup']}" if ref.get("apiGroup") else ""))
    granted = {account: namespaced | variant.cluster.get(account, set())
               for account, namespaced in variant.namespaced.items()}
    beyond = {account: sorted(used[account] - granted[account]) for account in granted}
    unused = {account: sorted(granted[account] - used[account] - CHECKED_NOT_REQUESTED.get(account, set()))
              for account in granted}
    assert not any(beyond.values()), f"used without a grant (the API server refused them): {beyond}"
    assert not any(unused.values()), f"granted but never used: {unused}"


async def test_kubectl_explain_and_a_server_side_apply_of_the_examples(installed: Installed) -> None:
    kubectl, admin, ns = installed.kubectl, installed.admin, installed.variant.payments
    explained = (await kubectl("explain", "paymentintent.spec")).ok().stdout
    assert "KIND:       PaymentIntent" in explained
    assert "orderId\t<string> -required-" in explained and "amount\t<integer> -required-" in explained

    # GitOps applies examples/ with server-side apply: the payments are taken; the refund of a payment nobody has
    # paid yet is refused by admission, and taken once the payment succeeded.
    apply = ("apply", "--server-side", "--field-manager=gitops", "-f", str(REPO / "examples"))
    early = await kubectl(*apply)
    assert early.returncode != 0
    assert "paymentintent.kubepay.io/order-1111 serverside-applied" in early.stdout
    assert "paymentintent.kubepay.io/order-2222 serverside-applied" in early.stdout
    assert "PaymentIntent 'order-1111' has not succeeded" in early.stderr, early.stderr
    intent_id = await stripe_id(admin, ns, "order-1111")
    await confirm_and_notify(installed.stripe.client(), intent_id, TEST_CARDS["success"], installed.webhook_url,
                             WEBHOOK_SECRET)
    await admin.phase_is(ns, "order-1111", "Succeeded", timeout=30)
    again = (await kubectl(*apply)).ok()
    assert "paymentrefund.kubepay.io/order-1111-refund-1 serverside-applied" in again.stdout
    await refund_phase_is(admin, ns, "order-1111-refund-1", "Succeeded", timeout=30)
    pi = await admin.get_pi(ns, "order-1111")
    assert pi is not None and "gitops" in {m["manager"] for m in pi["metadata"]["managedFields"]}

    # The CEL rule keeps orderId immutable, for server-side apply as for every other write.
    changed = yaml.safe_load((REPO / "examples" / "paymentintent.yaml").read_text())
    changed["spec"]["orderId"] = "1112"
    refused = await kubectl("apply", "--server-side", "--field-manager=gitops", "-f", "-",
                            stdin=yaml.safe_dump(changed))
    assert refused.returncode != 0
    assert 'spec.orderId: Invalid value: "1112": orderId is immutable' in refused.stderr, refused.stderr


async def _check_ready(*args: str) -> tuple[int, list[str]]:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "kubepay", *args,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert err == b"", err
    assert process.returncode is not None
    return process.returncode, out.decode().splitlines()


async def test_every_metric_the_alerts_and_the_dashboard_query_is_in_a_scrape_of_the_processes(
        installed: Installed, story: Story) -> None:
    """After the story, each process's own metrics port answers, apart from its serving port, and between them
    they export every name the chart's PrometheusRule and Grafana dashboard query."""
    objects = await asyncio.to_thread(monitoring.rendered)
    scraped: set[str] = set()
    async with aiohttp.ClientSession() as session:
        for component in ("controller", "receiver", "api"):
            port = installed.env[component]["KUBEPAY_METRICS_PORT"]
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200, component
                families = list(text_string_to_metric_families(await response.text()))
            names = {sample.name for family in families for sample in family.samples}
            assert "kubepay_build_info" in names, component
            scraped |= names
        receiver_port = installed.env["receiver"]["PAYMENT_HTTP_PORT"]
        async with session.get(f"http://127.0.0.1:{receiver_port}/metrics") as response:
            assert response.status == 404  # the port behind the Ingress serves no metrics
    assert monitoring.queried(objects) - scraped == set()


async def test_each_process_says_once_at_start_what_it_runs_and_nothing_per_success(
        installed: Installed, story: Story) -> None:
    """After the story, each process's log holds one start-up line (version, Stripe API version, the namespaces
    of the chart's values, features) and no line per routine success."""
    namespaces = {"controller": [installed.variant.payments] if not installed.variant.cluster_wide else ["*"],
                  "receiver": [installed.variant.payments] if not installed.variant.cluster_wide else ["*"],
                  "api": [installed.variant.payments]}
    for component, process in installed.processes.items():
        records = [json.loads(line) for line in process.logs().splitlines() if line.startswith("{")]
        [start] = [r for r in records if "stripe_api_version" in r]
        assert (start["command"], start["version"], start["namespaces"]) == (
            process.command, __version__, namespaces[component]), start
        assert f"metrics:{installed.env[component]['KUBEPAY_METRICS_PORT']}" in start["features"], start
        routine = [r["message"] for r in records if r["message"].endswith(" succeeded.")
                   or r["message"].startswith(("published ", "Stripe event "))]
        assert routine == [], (component, routine[:3])


async def test_the_helm_test_hook_passes_against_the_running_processes_and_fails_without_one(
        installed: Installed) -> None:
    """`helm test` runs the hook Pod's `kubepay check-ready` against the Services; here each Service URL becomes the
    local process that stands for its pods, and the command runs here with the hook's own arguments. Runs last: it
    stops the API (or the receiver) and starts it again."""
    args = await installed.release.test_hook()
    assert args[0] == "check-ready"
    local = {f"http://{RELEASE}-receiver.{RELEASE_NAMESPACE}.svc:80/readyz":
             f"http://127.0.0.1:{installed.env['receiver']['PAYMENT_HTTP_PORT']}/readyz",
             f"http://{RELEASE}-api.{RELEASE_NAMESPACE}.svc:80/readyz": f"{installed.api_url}/readyz"}
    urls = [a for a in args if a.startswith("http://")]
    assert urls == list(local), urls  # both variants turn the API on
    rewritten = [local.get(a, a) for a in args]
    code, lines = await _check_ready(*rewritten)
    assert (code, lines) == (0, [f"{local[u]}: 200 OK" for u in urls])

    api = installed.processes["api"]
    await api.stop()
    try:
        code, lines = await _check_ready(*rewritten)
    finally:
        await api.start()
    assert code == 1
    assert lines[0] == f"{local[urls[0]]}: 200 OK"
    assert lines[1].startswith(f"{local[urls[1]]}: ClientConnectorError"), lines
