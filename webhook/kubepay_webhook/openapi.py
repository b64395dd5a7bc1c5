"""The OpenAPI 3.1 document of `kubepay api`, served at GET /openapi.json (a test checks routes and answers)."""

from __future__ import annotations

from importlib import metadata
from typing import Any


def _version() -> str:
    try:
        return metadata.version("kubepay")
    except metadata.PackageNotFoundError:
        return "0.0.0"


_DECIMAL = {"type": "string", "pattern": r"^\d+(\.\d+)?$", "examples": ["19.99"],
            "description": "The amount as a decimal string in the currency's major unit."}
_MINOR = {"type": "integer", "examples": [1999],
          "description": "Integer amount in the currency's minor units, as in Stripe (1999 is 19.99 USD, 1200 is "
                         "1200 JPY)."}
_STRING = {"type": "string"}
_AMOUNT_IN = {
    "amount": {**_MINOR, "minimum": 1, "maximum": 99999999},
    "amount_decimal": {**_DECIMAL, "description": "Instead of `amount`: a decimal string in the major unit, "
                                                  "for example \"19.99\" (USD) or \"1200\" (JPY)."},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        401: ("Error", "Missing or invalid bearer token."),
        403: ("Error", "The caller's ServiceAccount may not create paymentintents in the API's namespace "
                       "(KUBEPAY_API_AUTH=serviceaccount)."),
        404: ("Error", "No such payment."),
        409: ("Error", "The order already has a payment with another amount or currency, or was paid already "
                       "and its PaymentIntent deleted, or the Idempotency-Key was used for another refund."),
        410: ("Error", "The payment's PaymentIntent was deleted (retention deletes finished payments): refund it "
                       "in Stripe."),
        422: ("ValidationError", "Invalid body or query; `fields` says what is wrong with each field."),
        501: ("Error", "The PaymentRefund CRD is not installed."),
        503: ("Error", "PostgreSQL or Kubernetes is unreachable; retry later."),
        504: ("Error", "The client secret did not appear in time; the payment exists, repeat the request."),
    }
    result = {str(code): _json(*meaning[code]) for code in codes}
    if 422 in codes:
        result["422"] = {
            "description": "Invalid body or query (`fields` says what is wrong with each field), or Stripe "
                           "refused the payment (`error` says why; the resource exists, in phase Failed).",
            "content": {"application/json": {"schema": {"anyOf": [_ref("ValidationError"), _ref("Error")]}}},
        }
    return result


_PAYMENT_ID = {"name": "id", "in": "path", "required": True, "description": "The payment id (uuid).",
               "schema": {"type": "string"}}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "What went wrong, for people."},
            "fields": {"type": "object", "additionalProperties": _STRING},
            "name": {"type": "string", "description": "The PaymentIntent or PaymentRefund resource concerned."},
            "payment_id": {"type": "string", "format": "uuid"},
        },
        "additionalProperties": False,
    },
    "ValidationError": {
        "type": "object",
        "required": ["error", "fields"],
        "properties": {
            "error": {"const": "invalid request"},
            "fields": {"type": "object", "additionalProperties": _STRING,
                       "description": "Field name -> what is wrong with it.",
                       "examples": [{"amount_decimal": "amount '12.345' has more than 2 decimal places for USD"}]},
        },
        "additionalProperties": False,
    },
    "IntentRequest": {
        "type": "object",
        "required": ["order_id", "currency"],
        "description": "Give `amount` (integer minor units) or `amount_decimal` (major-unit decimal string), not both.",
        "oneOf": [{"required": ["amount"]}, {"required": ["amount_decimal"]}],
        "properties": {
            "order_id": {"type": ["string", "integer"], "minLength": 1, "maxLength": 255},
            **_AMOUNT_IN,
            "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$", "examples": ["USD"]},
            "user_id": {"type": ["string", "integer"], "maxLength": 255},
            "description": {"type": "string", "maxLength": 1000},
            "metadata": {"type": "object", "maxProperties": 30, "additionalProperties": {"type": "string"}},
        },
    },
    "IntentResponse": {
        "type": "object",
        "required": ["payment_id", "client_secret", "name", "namespace", "order_id", "amount", "amount_decimal",
                     "currency"],
        "properties": {
            "payment_id": {"type": "string", "format": "uuid"},
            "client_secret": {"type": "string", "description": "Stripe's client secret, for the front end."},
            "name": {"type": "string", "description": "The PaymentIntent resource."},
            "namespace": _STRING,
            "order_id": _STRING,
            "amount": _MINOR,
            "amount_decimal": _DECIMAL,
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        },
        "additionalProperties": False,
    },
    "Payment": {
        "type": "object",
        "required": ["id", "order_id", "user_id", "amount", "amount_decimal", "currency", "status",
                     "payment_method", "provider", "provider_payment_id", "amount_received", "amount_received_decimal",
                     "amount_refunded", "amount_refunded_decimal", "failure_code", "failure_reason", "resource",
                     "created_at", "updated_at"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "order_id": _STRING,
            "user_id": _STRING,
            "amount": _MINOR,
            "amount_decimal": _DECIMAL,
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "status": {"enum": ["pending", "succeeded", "failed", "canceled", "refunded", "partially_refunded"]},
            "payment_method": _STRING,
            "provider": {"const": "stripe"},
            "provider_payment_id": _STRING,
            "amount_received": _MINOR,
            "amount_received_decimal": _DECIMAL,
            "amount_refunded": _MINOR,
            "amount_refunded_decimal": _DECIMAL,
            "failure_code": _STRING,
            "failure_reason": _STRING,
            "resource": {"type": "object", "required": ["namespace", "name"], "additionalProperties": False,
                         "properties": {"namespace": _STRING, "name": _STRING}},
            "created_at": {"type": ["string", "null"], "format": "date-time"},
            "updated_at": {"type": ["string", "null"], "format": "date-time"},
        },
        "additionalProperties": False,
    },
    "PaymentList": {
        "type": "object",
        "required": ["payments"],
        "properties": {"payments": {"type": "array", "items": _ref("Payment")}},
        "additionalProperties": False,
    },
    "RefundRequest": {
        "type": "object",
        "description": "`amount` (integer minor units) or `amount_decimal`, not both; without either, everything "
                       "still refundable is refunded.",
        "not": {"required": ["amount", "amount_decimal"]},
        "properties": {
            **_AMOUNT_IN,
            "reason": {"enum": ["duplicate", "fraudulent", "requested_by_customer"]},
        },
    },
    "Refund": {
        "type": "object",
        "required": ["name", "namespace", "payment_id", "payment_intent_name", "amount", "amount_decimal",
                     "currency", "reason", "phase"],
        "properties": {
            "name": {"type": "string", "description": "The PaymentRefund resource."},
            "namespace": _STRING,
            "payment_id": {"type": "string", "format": "uuid"},
            "payment_intent_name": _STRING,
            "amount": {**_MINOR, "type": ["integer", "null"],
                       "description": "Minor units; null: everything still refundable."},
            "amount_decimal": {**_DECIMAL, "type": ["string", "null"]},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "reason": {"enum": ["duplicate", "fraudulent", "requested_by_customer", None]},
            "phase": {"enum": ["Pending", "Succeeded", "Failed", "Canceled"]},
        },
        "additionalProperties": False,
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"enum": ["ready", "unavailable"]},
                       "problems": {"type": "object", "additionalProperties": _STRING}},
        "additionalProperties": False,
    },
}

_AUTHENTICATION = {
    "token": "Every route but /healthz, /readyz and /openapi.json needs `Authorization: Bearer "
             "<KUBEPAY_API_TOKEN>`.",
    "serviceaccount": "Every route but /healthz, /readyz and /openapi.json needs `Authorization: Bearer <the "
                      "caller's ServiceAccount token>`, whose ServiceAccount may `create` `paymentintents` "
                      "(kubepay.io) in the API's namespace.",
    "none": "No route needs authentication (KUBEPAY_API_AUTH=none); a NetworkPolicy limits who can connect.",
}


def document(auth_mode: str = "token") -> dict[str, Any]:
    """The document for the process's KUBEPAY_API_AUTH mode: with `none`, no route asks for a token."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kubepay API",
            "version": _version(),
            "description": "The payment-service HTTP API, served by `kubepay api`. Amounts are integers in the "
                           "currency's minor units (`amount`), as in Stripe; `amount_decimal` is the same amount "
                           "as a decimal string. " + _AUTHENTICATION[auth_mode],
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "security": [] if auth_mode == "none" else [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
        "paths": {
            "/payments/intent": {
                "post": {
                    "summary": "Create (idempotently) the payment of an order and return its client secret.",
                    "requestBody": {"required": True,
                                    "content": {"application/json": {"schema": _ref("IntentRequest")}}},
                    "responses": {
                        "201": _json("IntentResponse", "Created the order's PaymentIntent."),
                        "200": _json("IntentResponse", "The order's existing payment (a repeated request)."),
                        **_errors(401, 403, 409, 422, 503, 504),
                    },
                }
            },
            "/payments": {
                "get": {
                    "summary": "The payments of an order.",
                    "parameters": [{"name": "order_id", "in": "query", "required": True, "schema": _STRING}],
                    "responses": {"200": _json("PaymentList", "The order's payments, oldest first."),
                                  **_errors(401, 403, 422, 503)},
                }
            },
            "/payments/{id}": {
                "get": {
                    "summary": "One payment, as stored in PostgreSQL.",
                    "parameters": [_PAYMENT_ID],
                    "responses": {"200": _json("Payment", "The payment."), **_errors(401, 403, 404, 503)},
                }
            },
            "/payments/{id}/refunds": {
                "post": {
                    "summary": "Refund a payment (creates a PaymentRefund resource).",
                    "parameters": [
                        _PAYMENT_ID,
                        {"name": "Idempotency-Key", "in": "header", "required": False, "schema": _STRING,
                         "description": "Repeating a request with the same key returns the same refund."},
                    ],
                    "requestBody": {"required": False,
                                    "content": {"application/json": {"schema": _ref("RefundRequest")}}},
                    "responses": {
                        "201": _json("Refund", "The PaymentRefund was created."),
                        "200": _json("Refund", "The refund made earlier with this Idempotency-Key."),
                        **_errors(401, 403, 404, 409, 410, 422, 501, 503),
                    },
                }
            },
            "/healthz": {"get": {"summary": "Liveness, as the Go payment-service answered it.", "security": [],
                                 "responses": {"200": {"description": "The process runs.", "content": {
                                     "text/plain": {"schema": {"const": "ok"}}}}}}},
            "/readyz": {"get": {"summary": "Readiness: PostgreSQL and Kubernetes answer.", "security": [],
                                "responses": {"200": _json("Health", "Ready."),
                                              "503": _json("Health", "A backend is unreachable.")}}},
            "/openapi.json": {"get": {"summary": "This document.", "security": [],
                                      "responses": {"200": {"description": "The OpenAPI document.",
                                                            "content": {"application/json": {"schema": {
                                                                "type": "object"}}}}}}},
        },
    }
