"""The Kubernetes API emulator behaves like a real API server for kopf, kubernetes_asyncio and kubectl."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException

from kubepay.kube.client import KubeClient, TokenRefused
from kubepay_sandbox.kube_emulator import KubeEmulator, validate_custom_resource

REPO = Path(__file__).resolve().parents[2]
PAYMENT_CRD = REPO / "crds" / "paymentintents.kubepay.io.yaml"

WIDGETS_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, listKind: WidgetList, plural: widgets, singular: widget, shortNames: [wg]}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      additionalPrinterColumns:
        - {name: Size, type: integer, jsonPath: .spec.size}
        - {name: Phase, type: string, jsonPath: .status.phase}
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              required: [size, code]
              properties:
                size: {type: integer, minimum: 1}
                code:
                  type: string
                  pattern: "^[a-z]{3}$"
                  x-kubernetes-validations:
                    - {rule: self == oldSelf, message: code is immutable}
                mode: {type: string, enum: [fast, slow], default: fast}
                port: {x-kubernetes-int-or-string: true}
                note: {type: string, nullable: true}
                extra: {type: object, x-kubernetes-preserve-unknown-fields: true}
            status:
              type: object
              properties:
                phase: {type: string, enum: [Pending, Ready]}
                observedGeneration: {type: integer}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Gadget, plural: gadgets, singular: gadget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"""

WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"
GADGETS = "/apis/example.com/v1/namespaces/default/gadgets"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def widget(name: str = "w1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name},
            "spec": {"size": 1, "code": "abc", **spec}}


async def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def crd_paths(tmp_path: Path) -> list[Path]:
    path = tmp_path / "widgets.yaml"
    path.write_text(WIDGETS_CRD)
    return [path, PAYMENT_CRD] if PAYMENT_CRD.exists() else [path]


@pytest.fixture
async def emu(crd_paths: list[Path]) -> AsyncIterator[KubeEmulator]:
    emulator = KubeEmulator(crd_paths)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def http(emu: KubeEmulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=emu.url) as session:
        yield session


@pytest.fixture
async def api_client(emu: KubeEmulator, tmp_path: Path) -> AsyncIterator[k8s_client.ApiClient]:
    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig")
    configuration = k8s_client.Configuration()
    await k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    async with k8s_client.ApiClient(configuration) as api:
        yield api


async def request(http: aiohttp.ClientSession, method: str, url: str, body: Any = None,
                  headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with http.request(method, url, json=body, headers=headers) as response:
        return response.status, await response.json()


async def create(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    status, obj = await request(http, "POST", url, body)
    assert status == 201, obj
    return obj  # type: ignore[no-any-return]


async def read_events(response: aiohttp.ClientResponse, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    events = []
    async with asyncio.timeout(timeout):
        while len(events) < count:
            line = await response.content.readline()
            if not line:
                break
            events.append(json.loads(line))
    return events


# --------------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------------


async def test_discovery_lists_crds_and_builtins(http: aiohttp.ClientSession) -> None:
    _, apis = await request(http, "GET", "/apis")
    assert "example.com" in [group["name"] for group in apis["groups"]]
    _, group = await request(http, "GET", "/apis/example.com")
    assert group["preferredVersion"]["groupVersion"] == "example.com/v1"
    _, resources = await request(http, "GET", "/apis/example.com/v1")
    by_name = {r["name"]: r for r in resources["resources"]}
    assert by_name["widgets"]["kind"] == "Widget"
    assert by_name["widgets"]["singularName"] == "widget"
    assert by_name["widgets"]["shortNames"] == ["wg"]
    assert by_name["widgets"]["namespaced"] is True
    assert "widgets/status" in by_name
    assert "gadgets/status" not in by_name
    _, core = await request(http, "GET", "/api/v1")
    core_names = {r["name"]: r for r in core["resources"]}
    assert {"namespaces", "secrets", "events", "configmaps"} <= set(core_names)
    assert core_names["namespaces"]["namespaced"] is False
    _, versions = await request(http, "GET", "/api")
    assert versions["versions"] == ["v1"]


async def test_discovery_as_kubectl_reads_it(http: aiohttp.ClientSession) -> None:
    _, core = await request(http, "GET", "/api/v1")
    assert core["groupVersion"] == "v1"  # not "/v1": kubectl would know no core resource
    _, resources = await request(http, "GET", "/apis/example.com/v1")
    by_name = {r["name"]: r for r in resources["resources"]}
    status = by_name["widgets/status"]
    assert sorted(status["verbs"]) == ["get", "patch", "update"]
    assert "shortNames" not in status and "categories" not in status  # "wg" names widgets only
    assert status["singularName"] == ""


async def test_openapi_v3_says_the_server_validates_fields(http: aiohttp.ClientSession) -> None:
    _, root = await request(http, "GET", "/openapi/v3")
    assert {"api/v1", "apis/example.com/v1"} <= set(root["paths"])
    _, doc = await request(http, "GET", root["paths"]["apis/example.com/v1"]["serverRelativeURL"])
    patch = doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "example.com", "version": "v1", "kind": "Widget"}
    assert "fieldValidation" in [p["name"] for p in patch["parameters"] if p["in"] == "query"]
    assert "application/strategic-merge-patch+json" not in patch["requestBody"]["content"]
    schema = doc["components"]["schemas"]["com.example.v1.Widget"]
    assert schema["properties"]["spec"]["properties"]["size"]["minimum"] == 1
    status, _ = await request(http, "GET", "/openapi/v3/apis/nothing.example/v1")
    assert status == 404


async def test_field_validation_strict_warn_and_ignore(http: aiohttp.ClientSession) -> None:
    url = "/apis/example.com/v1/namespaces/default/widgets"
    typo = {**widget("typo"), "spec": {"size": 1, "code": "abc", "sise": 2}}
    status, error = await request(http, "POST", f"{url}?fieldValidation=Strict", typo)
    assert status == 400, error
    assert error["message"] == ('Widget in version "v1" cannot be handled as a Widget: strict decoding error: '
                                'unknown field "spec.sise"')
    status, _ = await request(http, "POST", f"{url}?fieldValidation=Bogus", typo)
    assert status == 400
    async with http.post(url, json=typo) as response:  # Warn is the default
        assert response.status == 201
        assert response.headers.getall("Warning") == ['299 - "unknown field \\"spec.sise\\""']
        assert "sise" not in (await response.json())["spec"]  # pruned
    async with http.patch(f"{url}/typo/status?fieldValidation=Ignore", json={"status": {"phaze": "x"}},
                          headers={"Content-Type": "application/merge-patch+json"}) as response:
        assert response.status == 200 and "Warning" not in response.headers
    # The main resource's write ignores status (and says nothing about it), as the real server does.
    status, _ = await request(http, "PUT", f"{url}/typo?fieldValidation=Strict",
                              {**(await request(http, "GET", f"{url}/typo"))[1], "status": {"phaze": "x"}})
    assert status == 200


async def test_builtin_tables_have_the_servers_columns(http: aiohttp.ClientSession) -> None:
    await create(http, "/api/v1/namespaces/default/events", {
        "metadata": {"name": "e1"}, "type": "Warning", "reason": "Tested", "message": " hi ",
        "involvedObject": {"kind": "Widget", "name": "w1"}, "count": 3,
        "eventTime": "2020-01-01T00:00:00.123456Z", "source": {"component": "kopf"}})
    _, table = await request(http, "GET", "/api/v1/namespaces/default/events",
                             headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0] == [
        "Last Seen", "Type", "Reason", "Object", "Message"]
    [row] = table["rows"]
    cells = dict(zip([c["name"] for c in table["columnDefinitions"]], row["cells"], strict=True))
    assert cells["Last Seen"].endswith("d") and cells["Type"] == "Warning" and cells["Reason"] == "Tested"
    assert (cells["Object"], cells["Message"], cells["Count"], cells["Source"]) == ("widget/w1", "hi", 3, "kopf")
    _, table = await request(http, "GET", "/api/v1/namespaces",
                             headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Status", "Age"]
    assert ["default", "Active"] in [row["cells"][:2] for row in table["rows"]]


async def test_namespaces_are_cluster_scoped_objects(http: aiohttp.ClientSession) -> None:
    status, namespaces = await request(http, "GET", "/api/v1/namespaces")
    assert status == 200
    assert namespaces["kind"] == "NamespaceList"
    assert "default" in [ns["metadata"]["name"] for ns in namespaces["items"]]
    status, default = await request(http, "GET", "/api/v1/namespaces/default")
    assert status == 200 and default["status"]["phase"] == "Active"
    await create(http, "/apis/example.com/v1/namespaces/brand-new/widgets", widget())
    status, _ = await request(http, "GET", "/api/v1/namespaces/brand-new")
    assert status == 200
    status, error = await request(http, "GET", "/apis/example.com/v1/nothings")
    assert status == 404 and error["reason"] == "NotFound"


# --------------------------------------------------------------------------------------------------
# Object metadata, create, conflicts
# --------------------------------------------------------------------------------------------------


async def test_create_fills_server_side_metadata(http: aiohttp.ClientSession, emu: KubeEmulator) -> None:
    body = widget()
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = "w-"
    first = await create(http, WIDGETS, body)
    meta = first["metadata"]
    assert re.fullmatch(r"w-[a-z0-9]{5}", meta["name"])
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert meta["generation"] == 1
    assert meta["namespace"] == "default"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    second = await create(http, WIDGETS, widget("w2"))
    assert int(second["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert second["metadata"]["uid"] != meta["uid"]
    assert second["spec"]["mode"] == "fast"  # schema default applied

    status, error = await request(http, "POST", WIDGETS, widget("w2"))
    assert status == 409
    assert error["reason"] == "AlreadyExists"
    assert error["message"] == 'widgets.example.com "w2" already exists'

    stored = emu.get("example.com/v1/widgets", "default", "w2")
    assert stored is not None and stored["metadata"]["uid"] == second["metadata"]["uid"]
    assert [w["metadata"]["name"] for w in emu.list("example.com/v1/widgets")] == [meta["name"], "w2"]
    assert emu.get("example.com/v1/widgets", "default", "absent") is None


async def test_generation_counts_spec_changes_only(http: aiohttp.ClientSession) -> None:
    await create(http, WIDGETS, widget())
    _, obj = await request(http, "PATCH", f"{WIDGETS}/w1", {"metadata": {"labels": {"a": "b"}}}, MERGE)
    assert obj["metadata"]["generation"] == 1
    _, obj = await request(http, "PATCH", f"{WIDGETS}/w1/status", {"status": {"phase": "Ready"}}, MERGE)
    assert obj["metadata"]["generation"] == 1
    rv = obj["metadata"]["resourceVersion"]
    _, obj = await request(http, "PATCH", f"{WIDGETS}/w1", {"spec": {"size": 2}}, MERGE)
    assert obj["metadata"]["generation"] == 2
    assert int(obj["metadata"]["resourceVersion"]) > int(rv)
    rv = obj["metadata"]["resourceVersion"]
    _, obj = await request(http, "PATCH", f"{WIDGETS}/w1", {"spec": {"size": 2}}, MERGE)  # no-op
    assert obj["metadata"]["resourceVersion"] == rv and obj["metadata"]["generation"] == 2


async def test_stale_resource_version_conflicts(http: aiohttp.ClientSession) -> None:
    created = await create(http, WIDGETS, widget("x"))
    stale = created["metadata"]["resourceVersion"]
    _, fresh = await request(http, "PATCH", f"{WIDGETS}/x", {"spec": {"size": 5}}, MERGE)
    expected = ('Operation cannot be fulfilled on widgets.example.com "x": the object has been modified; '
                "please apply your changes to the latest version and try again")

    replacement = widget("x", size=7)
    replacement["metadata"]["resourceVersion"] = stale
    status, error = await request(http, "PUT", f"{WIDGETS}/x", replacement)
    assert (status, error["reason"], error["message"]) == (409, "Conflict", expected)

    patch = {"metadata": {"resourceVersion": stale}, "spec": {"size": 7}}
    status, error = await request(http, "PATCH", f"{WIDGETS}/x", patch, MERGE)
    assert (status, error["reason"]) == (409, "Conflict")
    status, error = await request(http, "PATCH", f"{WIDGETS}/x/status",
                                  {"metadata": {"resourceVersion": stale}, "status": {"phase": "Ready"}}, MERGE)
    assert status == 409

    patch["metadata"]["resourceVersion"] = fresh["metadata"]["resourceVersion"]
    status, obj = await request(http, "PATCH", f"{WIDGETS}/x", patch, MERGE)
    assert status == 200 and obj["spec"]["size"] == 7

    replacement["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"]
    status, obj = await request(http, "PUT", f"{WIDGETS}/x", replacement)
    assert status == 200 and obj["spec"] == {"size": 7, "code": "abc", "mode": "fast"}


# --------------------------------------------------------------------------------------------------
# Patches and the status subresource
# --------------------------------------------------------------------------------------------------


async def test_patch_content_types(http: aiohttp.ClientSession) -> None:
    await create(http, WIDGETS, {**widget(), "metadata": {"name": "w1", "labels": {"a": "1", "b": "2"}}})
    _, obj = await request(http, "PATCH", f"{WIDGETS}/w1", {"metadata": {"labels": {"a": None}}}, MERGE)
    assert obj["metadata"]["labels"] == {"b": "2"}

    rv = obj["metadata"]["resourceVersion"]
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
           {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/f"]},
           {"op": "replace", "path": "/spec/size", "value": 3}]
    status, obj = await request(http, "PATCH", f"{WIDGETS}/w1", ops, JSON_PATCH)
    assert status == 200 and obj["metadata"]["finalizers"] == ["example.com/f"] and obj["spec"]["size"] == 3

    status, error = await request(http, "PATCH", f"{WIDGETS}/w1", ops, JSON_PATCH)  # the test op fails now
    assert (status, error["reason"]) == (422, "Invalid")
    status, error = await request(http, "PATCH", f"{WIDGETS}/w1",
                                  [{"op": "remove", "path": "/spec/absent"}], JSON_PATCH)
    assert status == 422

    smp = {"Content-Type": "application/strategic-merge-patch+json"}
    _, obj = await request(http, "PATCH", f"{WIDGETS}/w1", {"spec": {"size": 4}}, smp)
    assert obj["spec"]["size"] == 4
    status, _ = await request(http, "PATCH", f"{WIDGETS}/w1", {"spec": {}}, {"Content-Type": "text/plain"})
    assert status == 415

    replacement = widget("w1", size=9)
    _, obj = await request(http, "PUT", f"{WIDGETS}/w1", replacement)
    assert "labels" not in obj["metadata"] and obj["spec"]["size"] == 9  # PUT replaces
    assert obj["metadata"]["uid"]


async def test_status_subresource_is_separate(http: aiohttp.ClientSession) -> None:
    body = widget()
    body["status"] = {"phase": "Ready"}
    created = await create(http, WIDGETS, body)
    assert "status" not in created  # dropped on create, as for any CR with a status subresource

    _, obj = await request(http, "PATCH", f"{WIDGETS}/w1", {"spec": {"size": 2}, "status": {"phase": "Ready"}},
                           MERGE)
    assert obj["spec"]["size"] == 2 and "status" not in obj

    _, obj = await request(http, "PATCH", f"{WIDGETS}/w1/status",
                           {"spec": {"size": 99}, "metadata": {"labels": {"x": "y"}}, "status": {"phase": "Ready"}},
                           MERGE)
    assert obj["status"] == {"phase": "Ready"}
    assert obj["spec"]["size"] == 2 and "labels" not in obj["metadata"]

    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": obj["metadata"]["resourceVersion"]},
           {"op": "replace", "path": "/status/phase", "value": "Pending"}]
    status, obj = await request(http, "PATCH", f"{WIDGETS}/w1/status", ops, JSON_PATCH)
    assert status == 200 and obj["status"]["phase"] == "Pending"

    replacement = {**obj, "status": {"phase": "Ready"}, "spec": {"size": 50, "code": "abc"}}
    _, obj = await request(http, "PUT", f"{WIDGETS}/w1/status", replacement)
    assert obj["status"]["phase"] == "Ready" and obj["spec"]["size"] == 2

    status, error = await request(http, "PATCH", f"{WIDGETS}/w1/status", {"status": {"phase": "Bogus"}}, MERGE)
    assert status == 422 and error["details"]["causes"][0]["field"] == "status.phase"

    # Without a status subresource, status lives in the main object.
    gadget = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"},
              "spec": {"a": 1}, "status": {"s": 1}}
    created = await create(http, GADGETS, gadget)
    assert created["status"] == {"s": 1}
    _, obj = await request(http, "PATCH", f"{GADGETS}/g", {"status": {"s": 2}}, MERGE)
    assert obj["status"] == {"s": 2}
    status, _ = await request(http, "PATCH", f"{GADGETS}/g/status", {"status": {"s": 3}}, MERGE)
    assert status == 404


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def test_validate_custom_resource_messages(crd_paths: list[Path]) -> None:
    import yaml
    crd = next(yaml.safe_load_all(crd_paths[0].read_text()))
    good = widget()
    assert validate_custom_resource(crd, good) == []
    assert validate_custom_resource(crd, widget(size=0)) == [
        "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"]
    assert validate_custom_resource(crd, widget(code="US")) == [
        "spec.code: Invalid value: \"US\": spec.code in body should match '^[a-z]{3}$'"]
    assert validate_custom_resource(crd, widget(size=1.5)) == [
        'spec.size: Invalid value: "number": spec.size in body must be of type integer: "number"']
    assert validate_custom_resource(crd, widget(mode="warp")) == [
        'spec.mode: Unsupported value: "warp": supported values: "fast", "slow"']
    missing = widget()
    del missing["spec"]["code"]
    assert validate_custom_resource(crd, missing) == ["spec.code: Required value"]
    assert validate_custom_resource(crd, {"apiVersion": "example.com/v1", "kind": "Widget"}) == [
        "spec: Required value"]
    assert validate_custom_resource(crd, widget(port=8080)) == []
    assert validate_custom_resource(crd, widget(port="http")) == []
    assert validate_custom_resource(crd, widget(port=True)) == [
        'spec.port: Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean"']
    assert validate_custom_resource(crd, widget(note=None)) == []
    assert validate_custom_resource(crd, widget(code="xyz"), old=good) == [
        'spec.code: Invalid value: "xyz": code is immutable']
    assert validate_custom_resource(crd, widget(code="xyz")) == []  # transition rules need an old object


@pytest.mark.skipif(not PAYMENT_CRD.exists(), reason="the PaymentIntent CRD is not written yet")
def test_validate_payment_intent_examples() -> None:
    import yaml
    crd = next(yaml.safe_load_all(PAYMENT_CRD.read_text()))
    pi = {"apiVersion": "kubepay.io/v1alpha1", "kind": "PaymentIntent", "metadata": {"name": "x"},
          "spec": {"orderId": "1111", "amount": 1200, "currency": "usd"}}
    assert validate_custom_resource(crd, pi) == []
    assert validate_custom_resource(crd, {**pi, "spec": {**pi["spec"], "amount": 0}}) == [
        "spec.amount: Invalid value: 0: spec.amount in body should be greater than or equal to 1"]
    assert validate_custom_resource(crd, {**pi, "spec": {**pi["spec"], "currency": "US"}}) == [
        "spec.currency: Invalid value: \"US\": spec.currency in body should match '^[a-z]{3}$'"]
    assert validate_custom_resource(crd, {**pi, "spec": {"amount": 1, "currency": "usd"}}) == [
        "spec.orderId: Required value"]
    assert validate_custom_resource(crd, {**pi, "spec": {**pi["spec"], "amount": 1.5}}) == [
        'spec.amount: Invalid value: "number": spec.amount in body must be of type integer: "number"']
    changed = {**pi, "spec": {**pi["spec"], "orderId": "2222"}}
    assert validate_custom_resource(crd, changed, old=pi) == [
        'spec.orderId: Invalid value: "2222": orderId is immutable']


async def test_server_validates_prunes_and_defaults(http: aiohttp.ClientSession) -> None:
    status, error = await request(http, "POST", WIDGETS, widget("bad", size=0, code="US"))
    assert status == 422 and error["reason"] == "Invalid"
    assert error["message"] == (
        'Widget.example.com "bad" is invalid: [spec.code: Invalid value: "US": spec.code in body should match '
        "'^[a-z]{3}$', spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1]")
    assert [c["field"] for c in error["details"]["causes"]] == ["spec.code", "spec.size"]
    assert error["details"]["kind"] == "Widget" and error["details"]["group"] == "example.com"

    status, error = await request(http, "POST", WIDGETS, widget("Bad_Name"))
    assert status == 422 and error["details"]["causes"][0]["field"] == "metadata.name"

    body = widget(unknown="x", extra={"free": {"form": 1}}, note=None)
    body["junk"] = 1
    created = await create(http, WIDGETS, body)
    assert created["spec"] == {"size": 1, "code": "abc", "mode": "fast", "extra": {"free": {"form": 1}}, "note": None}
    assert "junk" not in created

    status, error = await request(http, "PATCH", f"{WIDGETS}/w1", {"spec": {"code": "xyz"}}, MERGE)
    assert status == 422
    assert error["message"] == (
        'Widget.example.com "w1" is invalid: spec.code: Invalid value: "xyz": code is immutable')
    status, error = await request(http, "PATCH", f"{WIDGETS}/w1", {"spec": {"size": -1}}, MERGE)
    assert status == 422


async def test_go_patterns_end_at_the_end_of_the_text(http: aiohttp.ClientSession) -> None:
    """The API server evaluates `pattern` with Go's RE2, whose `$` does not match before a final newline."""
    status, error = await request(http, "POST", WIDGETS, widget("nl", code="abc\n"))
    assert status == 422
    assert error["message"] == (
        'Widget.example.com "nl" is invalid: spec.code: Invalid value: "abc\\n": spec.code in body should match '
        "'^[a-z]{3}$'")


SECRETS = "/api/v1/namespaces/default/secrets"
LABEL_VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation "
    "is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


async def test_labels_and_annotations_are_validated_as_the_api_server_does(http: aiohttp.ClientSession) -> None:
    long_value = "order-" + "x" * 64
    status, error = await request(http, "POST", SECRETS, {
        "metadata": {"name": "s1", "labels": {"kubepay.io/payment-intent": long_value}}})
    assert (status, error["reason"], error["code"]) == (422, "Invalid", 422)
    assert error["message"] == (
        f'Secret "s1" is invalid: metadata.labels: Invalid value: "{long_value}": must be no more than 63 characters')
    assert error["details"] == {"name": "s1", "group": "", "kind": "Secret", "causes": [
        {"reason": "FieldValueInvalid", "field": "metadata.labels",
         "message": f'Invalid value: "{long_value}": must be no more than 63 characters'}]}

    status, error = await request(http, "POST", WIDGETS, {**widget("w9"), "metadata": {
        "name": "w9", "labels": {"team": "-payments"}, "annotations": {"a/b/c": "x"}}})
    assert status == 422
    assert [(c["field"], c["message"]) for c in error["details"]["causes"]] == [
        ("metadata.labels", f'Invalid value: "-payments": {LABEL_VALUE_RULE}'),
        ("metadata.annotations", 'Invalid value: "a/b/c": a qualified name must consist of alphanumeric characters, '
         "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  "
         "or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional "
         "DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")]

    await create(http, SECRETS, {"metadata": {"name": "s1", "labels": {"kubepay.io/payment-intent": "x" * 63, "e": ""},
                                              "annotations": {"Example.com/Name": long_value * 4}}})
    status, error = await request(http, "PATCH", f"{SECRETS}/s1", {"metadata": {"labels": {"bad key": "v"}}}, MERGE)
    assert status == 422 and error["details"]["causes"][0]["field"] == "metadata.labels"


async def test_a_denying_admission_policy_refuses_writes_with_422(
        http: aiohttp.ClientSession, emu: KubeEmulator) -> None:
    emu.deny("secrets", "default", "Secrets here need the label team")
    status, error = await request(http, "POST", SECRETS, {"metadata": {"name": "s2"}})
    assert (status, error["reason"]) == (422, "Invalid")
    assert error["message"] == ("secrets \"s2\" is forbidden: ValidatingAdmissionPolicy 'kubepay-test' with binding "
                                "'kubepay-test' denied request: Secrets here need the label team")
    emu.deny("secrets", "default", None)
    await create(http, SECRETS, {"metadata": {"name": "s2"}})


async def test_printer_columns_read_conditions_by_type(http: aiohttp.ClientSession) -> None:
    pis = "/apis/kubepay.io/v1alpha1/namespaces/default/paymentintents"
    await create(http, pis, {"apiVersion": "kubepay.io/v1alpha1", "kind": "PaymentIntent", "metadata": {"name": "p"},
                             "spec": {"orderId": "1", "amount": 100, "currency": "usd"}})
    conditions = [{"type": "Synced", "status": "True", "message": "in step"},
                  {"type": "Ready", "status": "False", "message": "Stripe reports requires_payment_method."}]
    await request(http, "PATCH", f"{pis}/p/status", {"status": {"conditions": conditions, "amountReceived": 0}},
                  MERGE)
    _, table = await request(http, "GET", pis, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    [row] = table["rows"]
    cells = dict(zip([c["name"] for c in table["columnDefinitions"]], row["cells"], strict=True))
    assert (cells["Ready"], cells["Synced"], cells["Received"], cells["Refunded"]) == ("False", "True", 0, None)
    assert cells["Message"] == "Stripe reports requires_payment_method."
    assert {c["name"]: c["priority"] for c in table["columnDefinitions"]}["Message"] == 1


# --------------------------------------------------------------------------------------------------
# Deletion, finalizers, garbage collection
# --------------------------------------------------------------------------------------------------


async def test_finalizers_delay_deletion_and_owned_objects_are_collected(
        http: aiohttp.ClientSession, emu: KubeEmulator) -> None:
    body = widget()
    body["metadata"]["finalizers"] = ["example.com/f"]
    owner = await create(http, WIDGETS, body)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "owned", "ownerReferences": [
        {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w1", "uid": owner["metadata"]["uid"],
         "controller": True}]}, "stringData": {"key": "value"}}
    created_secret = await create(http, "/api/v1/namespaces/default/secrets", secret)
    assert created_secret["data"] == {"key": "dmFsdWU="} and "stringData" not in created_secret
    await create(http, "/api/v1/namespaces/default/secrets",
                 {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated"}})

    async with http.get(WIDGETS, params={"watch": "true", "resourceVersion": owner["metadata"]["resourceVersion"]},
                        ) as stream:
        status, marked = await request(http, "DELETE", f"{WIDGETS}/w1")
        assert status == 200 and marked["metadata"]["deletionTimestamp"]
        assert marked["metadata"]["generation"] == 2, "marking for deletion is a new generation, as in Kubernetes"
        status, still = await request(http, "GET", f"{WIDGETS}/w1")
        assert status == 200 and still["metadata"]["deletionTimestamp"]
        assert emu.get("v1/secrets", "default", "owned") is not None

        status, error = await request(http, "PATCH", f"{WIDGETS}/w1",
                                      {"metadata": {"finalizers": ["example.com/f", "other/f"]}}, MERGE)
        assert status == 422 and "no new finalizers" in error["message"]

        status, _ = await request(http, "PATCH", f"{WIDGETS}/w1", {"metadata": {"finalizers": None}}, MERGE)
        assert status == 200
        events = await read_events(stream, 2)
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    assert events[1]["object"]["metadata"]["name"] == "w1"
    status, _ = await request(http, "GET", f"{WIDGETS}/w1")
    assert status == 404
    assert emu.get("v1/secrets", "default", "owned") is None
    assert emu.get("v1/secrets", "default", "unrelated") is not None

    plain = await create(http, WIDGETS, widget("plain"))
    status, result = await request(http, "DELETE", f"{WIDGETS}/plain")
    assert status == 200 and result["status"] == "Success"
    assert result["details"]["uid"] == plain["metadata"]["uid"]
    status, error = await request(http, "DELETE", f"{WIDGETS}/plain")
    assert status == 404 and error["message"] == 'widgets.example.com "plain" not found'


async def test_delete_collection_and_namespace(http: aiohttp.ClientSession, emu: KubeEmulator) -> None:
    url = "/apis/example.com/v1/namespaces/gone/widgets"
    for name in "ab":
        await create(http, url, {**widget(name), "metadata": {"name": name, "labels": {"x": name}}})
    status, deleted = await request(http, "DELETE", f"{url}?labelSelector=x%3Da")
    assert status == 200 and [w["metadata"]["name"] for w in deleted["items"]] == ["a"]
    assert [w["metadata"]["name"] for w in emu.list("example.com/v1/widgets", "gone")] == ["b"]
    status, _ = await request(http, "DELETE", "/api/v1/namespaces/gone")
    assert status == 200
    assert emu.list("example.com/v1/widgets", "gone") == []
    assert emu.get("v1/namespaces", None, "gone") is None


# --------------------------------------------------------------------------------------------------
# Lists and selectors
# --------------------------------------------------------------------------------------------------


async def test_lists_and_selectors(http: aiohttp.ClientSession) -> None:
    labels = {"a": {"a": "b", "e": "x", "f": "1"}, "b": {"a": "b", "c": "d", "e": "y", "f": "1"},
              "c": {"a": "b", "e": "z", "f": "1", "g": "1"}, "d": {"a": "zz", "f": "1"}}
    for name, label_set in labels.items():
        await create(http, WIDGETS, {**widget(name), "metadata": {"name": name, "labels": label_set}})
    await create(http, "/apis/example.com/v1/namespaces/other/widgets", widget("a"))

    status, listing = await request(http, "GET", WIDGETS)
    assert status == 200
    assert listing["kind"] == "WidgetList" and listing["apiVersion"] == "example.com/v1"
    assert int(listing["metadata"]["resourceVersion"]) >= 5
    assert [w["metadata"]["name"] for w in listing["items"]] == ["a", "b", "c", "d"]

    async def names(url: str, **params: str) -> list[tuple[str, str]]:
        async with http.get(url, params=params) as response:
            assert response.status == 200, await response.text()
            items = (await response.json())["items"]
        return [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items]

    assert await names(WIDGETS, labelSelector="a=b,c!=d,e in (x,y),f,!g") == [("default", "a")]
    assert await names(WIDGETS, labelSelector="e notin (x)") == [("default", "b"), ("default", "c"),
                                                                 ("default", "d")]
    assert await names(WIDGETS, labelSelector="a==zz") == [("default", "d")]
    assert await names(WIDGETS, fieldSelector="metadata.name=b") == [("default", "b")]
    assert await names("/apis/example.com/v1/widgets", fieldSelector="metadata.name=a") == [
        ("default", "a"), ("other", "a")]
    assert await names("/apis/example.com/v1/widgets", fieldSelector="metadata.namespace=other") == [
        ("other", "a")]
    assert await names("/apis/example.com/v1/widgets", fieldSelector="metadata.namespace!=other",
                       labelSelector="g") == [("default", "c")]
    async with http.get(WIDGETS, params={"labelSelector": "a in (b"}) as response:
        assert response.status == 400

    async with http.get(WIDGETS, params={"limit": "3"}) as response:
        page = await response.json()
    assert len(page["items"]) == 3 and page["metadata"]["continue"]
    async with http.get(WIDGETS, params={"limit": "3", "continue": page["metadata"]["continue"]}) as response:
        rest = await response.json()
    assert [w["metadata"]["name"] for w in rest["items"]] == ["d"] and "continue" not in rest["metadata"]


# --------------------------------------------------------------------------------------------------
# Watches
# --------------------------------------------------------------------------------------------------


async def test_watch_starts_after_resource_version(http: aiohttp.ClientSession) -> None:
    first = await create(http, WIDGETS, widget("a"))
    await create(http, WIDGETS, widget("b"))
    await request(http, "PATCH", f"{WIDGETS}/a", {"spec": {"size": 2}}, MERGE)

    params = {"watch": "1", "resourceVersion": first["metadata"]["resourceVersion"], "timeoutSeconds": "5",
              "allowWatchBookmarks": "true"}
    async with http.get(WIDGETS, params=params) as stream:
        events = await read_events(stream, 2)
        await create(http, WIDGETS, widget("c"))
        events += await read_events(stream, 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"), ("MODIFIED", "a"), ("ADDED", "c")]
    for event in events:
        meta = event["object"]["metadata"]
        assert meta["uid"] and meta["resourceVersion"] and meta["generation"] and meta["creationTimestamp"]
    assert events[1]["object"]["metadata"]["generation"] == 2

    # Without resourceVersion: the current objects first. watch=True as kubernetes_asyncio sends it.
    async with http.get(WIDGETS, params={"watch": "True", "timeoutSeconds": "5"}) as stream:
        events = await read_events(stream, 3)
    assert sorted((e["type"], e["object"]["metadata"]["name"]) for e in events) == [
        ("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]


async def test_watch_honours_selectors_namespaces_and_timeout(http: aiohttp.ClientSession) -> None:
    _, listing = await request(http, "GET", "/apis/example.com/v1/widgets")
    rv = listing["metadata"]["resourceVersion"]
    cluster_wide = http.get("/apis/example.com/v1/widgets", params={"watch": "true", "resourceVersion": rv,
                                                                    "labelSelector": "pick"})
    namespaced = http.get("/apis/example.com/v1/namespaces/one/widgets",
                          params={"watch": "true", "resourceVersion": rv})
    async with cluster_wide as all_stream, namespaced as one_stream:
        await create(http, "/apis/example.com/v1/namespaces/one/widgets",
                     {**widget("x"), "metadata": {"name": "x", "labels": {"pick": "1"}}})
        await create(http, "/apis/example.com/v1/namespaces/two/widgets",
                     {**widget("y"), "metadata": {"name": "y", "labels": {"pick": "1"}}})
        await create(http, "/apis/example.com/v1/namespaces/one/widgets", widget("z"))
        # Leaving the selector is a DELETED event for that watcher.
        await request(http, "PATCH", "/apis/example.com/v1/namespaces/two/widgets/y",
                      {"metadata": {"labels": {"pick": None}}}, MERGE)
        all_events = await read_events(all_stream, 3)
        one_events = await read_events(one_stream, 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in all_events] == [
        ("ADDED", "x"), ("ADDED", "y"), ("DELETED", "y")]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in one_events] == [("ADDED", "x"), ("ADDED", "z")]

    started = time.monotonic()
    async with http.get(WIDGETS, params={"watch": "true", "timeoutSeconds": "1", "resourceVersion": rv}) as stream:
        body = await asyncio.wait_for(stream.read(), timeout=5)
    assert body == b"" and 0.9 <= time.monotonic() - started < 4


async def test_watch_from_a_forgotten_version_is_gone(crd_paths: list[Path]) -> None:
    emulator = KubeEmulator(crd_paths, history_limit=3)
    url = await emulator.start()
    try:
        async with aiohttp.ClientSession(base_url=url) as http:
            first = await create(http, WIDGETS, widget("a"))
            for name in "bcde":
                await create(http, WIDGETS, widget(name))
            params = {"watch": "true", "resourceVersion": first["metadata"]["resourceVersion"]}
            async with http.get(WIDGETS, params=params) as stream:
                events = await read_events(stream, 2)
            assert len(events) == 1 and events[0]["type"] == "ERROR"
            assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
    finally:
        await emulator.stop()


async def test_stop_and_start_keeps_state_and_port(emu: KubeEmulator) -> None:
    async with aiohttp.ClientSession(base_url=emu.url) as http:
        created = await create(http, WIDGETS, widget())
        async with http.get(WIDGETS, params={"watch": "true",
                                             "resourceVersion": created["metadata"]["resourceVersion"]}) as stream:
            url = emu.url
            await emu.stop()
            assert await asyncio.wait_for(stream.read(), timeout=5) == b""  # the stream is closed
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{url}/api/v1/namespaces")
    assert await emu.start() == url
    async with aiohttp.ClientSession(base_url=emu.url) as http:
        status, obj = await request(http, "GET", f"{WIDGETS}/w1")
        assert status == 200 and obj["metadata"]["uid"] == created["metadata"]["uid"]


# --------------------------------------------------------------------------------------------------
# Clients: kubernetes_asyncio, kubectl
# --------------------------------------------------------------------------------------------------


async def test_kubernetes_asyncio_client(api_client: k8s_client.ApiClient, emu: KubeEmulator) -> None:
    custom = k8s_client.CustomObjectsApi(api_client)
    core = k8s_client.CoreV1Api(api_client)
    created = await custom.create_namespaced_custom_object("example.com", "v1", "default", "widgets", widget())
    assert created["metadata"]["uid"]
    # With a dict body, kubernetes_asyncio sends application/json-patch+json unless told otherwise:
    # the real server rejects that, and so does the emulator.
    with pytest.raises(ApiException) as wrong_type:
        await custom.patch_namespaced_custom_object_status(
            "example.com", "v1", "default", "widgets", "w1", {"status": {"phase": "Ready"}})
    assert wrong_type.value.status == 400
    patched = await custom.patch_namespaced_custom_object_status(
        "example.com", "v1", "default", "widgets", "w1", {"status": {"phase": "Ready"}},
        _content_type="application/merge-patch+json")
    assert patched["status"]["phase"] == "Ready"
    listing = await custom.list_namespaced_custom_object("example.com", "v1", "default", "widgets")
    assert [w["metadata"]["name"] for w in listing["items"]] == ["w1"]

    with pytest.raises(ApiException) as conflict:
        await custom.replace_namespaced_custom_object(
            "example.com", "v1", "default", "widgets", "w1",
            {**widget(), "metadata": {"name": "w1", "resourceVersion": created["metadata"]["resourceVersion"]}})
    assert conflict.value.status == 409
    with pytest.raises(ApiException) as invalid:
        await custom.patch_namespaced_custom_object("example.com", "v1", "default", "widgets", "w1",
                                                    {"spec": {"size": 0}}, _content_type="application/merge-patch+json")
    assert invalid.value.status == 422

    secret = await core.create_namespaced_secret("default", k8s_client.V1Secret(
        metadata=k8s_client.V1ObjectMeta(name="s"), string_data={"k": "v"}))
    assert secret.metadata.uid and secret.data == {"k": "dg=="}
    namespaces = await core.list_namespace()
    assert "default" in [ns.metadata.name for ns in namespaces.items]

    event = k8s_client.CoreV1Event(
        metadata=k8s_client.V1ObjectMeta(generate_name="w1-"), reason="Tested", message="hello", type="Normal",
        involved_object=k8s_client.V1ObjectReference(api_version="example.com/v1", kind="Widget", name="w1",
                                                     namespace="default", uid=created["metadata"]["uid"]))
    await core.create_namespaced_event("default", event)
    events = await core.list_namespaced_event("default")
    assert [e.reason for e in events.items] == ["Tested"]
    assert emu.list("v1/events", "default")[0]["message"] == "hello"

    watcher = k8s_watch.Watch()
    seen: list[tuple[str, str]] = []
    async with asyncio.timeout(10):
        async for event_ in watcher.stream(custom.list_namespaced_custom_object, "example.com", "v1", "default",
                                           "widgets", timeout_seconds=2):
            seen.append((event_["type"], event_["object"]["metadata"]["name"]))
            if len(seen) == 1:
                await custom.delete_namespaced_custom_object("example.com", "v1", "default", "widgets", "w1")
            if len(seen) == 2:
                watcher.stop()
    assert seen == [("ADDED", "w1"), ("DELETED", "w1")]


async def test_token_and_subject_access_reviews(
        emu: KubeEmulator, api_client: k8s_client.ApiClient, http: aiohttp.ClientSession) -> None:
    reviews = emu.reviews
    token = reviews.issue_service_account_token("shop", "web", pod="web-1")
    reviews.deny("system:serviceaccount:shop:web", "delete", "paymentintents", group="kubepay.io")
    reviews.allow("system:serviceaccounts:shop", "create", "paymentintents", group="kubepay.io", namespace="shop")
    kube = KubeClient(api_client)
    who = await kube.review_token(token)
    assert who.username == "system:serviceaccount:shop:web" and who.uid
    assert who.groups == ("system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated")
    assert who.extra["authentication.kubernetes.io/pod-name"] == ["web-1"]
    with pytest.raises(TokenRefused, match="invalid bearer token"):
        await kube.review_token("not-a-token")
    assert await kube.review_access(who, "create", "paymentintents", "shop") == (
        True, "allowed by the sandbox rule for 'system:serviceaccounts:shop' in namespace 'shop'")
    assert await kube.review_access(who, "create", "paymentintents", "other") == (False, "")  # RBAC: no opinion
    assert emu.reviews.access_log[-1]["extra"] == who.extra  # the whole identity was asked about

    # As the API server answers: 201 with the review's status; a malformed review is refused.
    sar = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    attributes = {"namespace": "shop", "verb": "delete", "group": "kubepay.io", "resource": "paymentintents"}
    status, denied = await request(http, "POST", sar,
                                   {"spec": {"user": who.username, "resourceAttributes": attributes}})
    assert (status, denied["kind"]) == (201, "SubjectAccessReview")
    assert denied["status"] == {"allowed": False, "denied": True,
                                "reason": "denied by the sandbox rule for 'system:serviceaccount:shop:web'"}
    status, invalid = await request(http, "POST", sar, {"spec": {"resourceAttributes": attributes}})
    assert (status, invalid["reason"]) == (422, "Invalid")
    assert "at least one of user or group must be specified" in invalid["message"]
    tokenreviews = "/apis/authentication.k8s.io/v1/tokenreviews"
    status, refused = await request(http, "POST", tokenreviews, {"spec": {"token": "nope"}})
    assert (status, refused["status"]) == (201, {"user": {}, "error": "[invalid bearer token, token lookup failed]"})
    assert (await request(http, "POST", tokenreviews, {"spec": {}}))[0] == 400
    assert (await request(http, "GET", tokenreviews))[0] == 405
    _, discovery = await request(http, "GET", "/apis/authentication.k8s.io/v1")
    assert [(r["name"], r["kind"], r["verbs"]) for r in discovery["resources"]] == [
        ("tokenreviews", "TokenReview", ["create"])]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_kubectl(emu: KubeEmulator, tmp_path: Path) -> None:
    kubeconfig = emu.write_kubeconfig(tmp_path / "kubeconfig", namespace="default")
    manifest = tmp_path / "w.yaml"
    manifest.write_text(json.dumps(widget("from-kubectl")))

    async def kubectl(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "kubectl", "--kubeconfig", str(kubeconfig), *args,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0, stderr.decode()
        return stdout.decode()

    await kubectl("create", "--validate=false", "-f", str(manifest))
    obj = json.loads(await kubectl("get", "wg", "from-kubectl", "-o", "json"))
    assert obj["metadata"]["uid"] and obj["spec"]["mode"] == "fast"
    await kubectl("patch", "widget", "from-kubectl", "--subresource=status", "--type=merge",
                  "-p", '{"status": {"phase": "Ready"}}')
    table = await kubectl("get", "widgets")
    assert re.search(r"from-kubectl\s+1\s+Ready", table), table
    await kubectl("delete", "widget", "from-kubectl")
    assert emu.get("example.com/v1/widgets", "default", "from-kubectl") is None


# --------------------------------------------------------------------------------------------------
# A real kopf operator
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clusterwide", [True, False], ids=["clusterwide", "namespaced"])
async def test_kopf_operator_runs_against_the_emulator(
        http: aiohttp.ClientSession, emu: KubeEmulator, clusterwide: bool) -> None:
    registry = kopf.OperatorRegistry()
    deleted: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=emu.url, insecure=True)

    @kopf.on.create("example.com", "v1", "widgets", registry=registry)
    def created(patch: kopf.Patch, meta: kopf.Meta, body: kopf.Body, **_: Any) -> None:
        kopf.info(body, reason="Created", message="The widget is ready.")
        patch.status["phase"] = "Ready"
        patch.status["observedGeneration"] = meta["generation"]

    @kopf.on.delete("example.com", "v1", "widgets", registry=registry)
    def on_delete(name: str, **_: Any) -> None:
        deleted.append(name)

    settings = kopf.OperatorSettings()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubepay.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kubepay.io", key="last-handled-configuration")
    settings.persistence.finalizer = "kubepay.io/finalizer"
    settings.watching.server_timeout = 2
    settings.watching.client_timeout = 5
    settings.watching.connect_timeout = 2
    settings.networking.request_timeout = 5
    settings.posting.level = logging.INFO

    stop_flag = asyncio.Event()
    ready_flag = asyncio.Event()
    task = asyncio.create_task(kopf.operator(
        registry=registry, settings=settings, standalone=True, clusterwide=clusterwide,
        namespaces=() if clusterwide else ["default"], stop_flag=stop_flag, ready_flag=ready_flag))
    try:
        await asyncio.wait_for(ready_flag.wait(), timeout=10)
        await create(http, WIDGETS, widget("managed"))

        def handled() -> bool:
            obj = emu.get("example.com/v1/widgets", "default", "managed")
            return bool(obj and obj.get("status", {}).get("phase") == "Ready"
                        and "kubepay.io/finalizer" in obj["metadata"].get("finalizers", []))

        await eventually(handled, what="the create handler")
        obj = emu.get("example.com/v1/widgets", "default", "managed")
        assert obj is not None and obj["status"]["observedGeneration"] == 1
        assert any(a.startswith("kubepay.io/") for a in obj["metadata"]["annotations"])
        await eventually(lambda: any(e["involvedObject"]["name"] == "managed" and e["reason"] == "Created"
                                     for e in emu.list("v1/events", "default")), what="a kopf event")

        status, _ = await request(http, "DELETE", f"{WIDGETS}/managed")
        assert status == 200
        await eventually(lambda: emu.get("example.com/v1/widgets", "default", "managed") is None,
                         what="the object to disappear")
        assert deleted == ["managed"]
    finally:
        stop_flag.set()
        await asyncio.wait_for(task, timeout=15)
