"""Where the sandbox's Kubernetes and Stripe come from: by default the emulator and the fake, or, for the
end-to-end tests, a real cluster and/or Stripe test mode when configured:

    KUBEPAY_E2E_KUBECONFIG   a kubeconfig of a cluster with the CRDs installed (`kubectl apply -f crds/`)
    KUBEPAY_E2E_CONTEXT      its context to use (default: the file's current-context)
    KUBEPAY_E2E_STRIPE_KEY   a Stripe test-mode secret key, sk_test_... (anything else is refused)
    KUBEPAY_E2E_REAL         1: start a real control plane (etcd, kube-apiserver, kube-controller-manager)
                             and Apache Kafka here (`make real-parts` builds them), instead of the emulator
                             and tansu; kubepay then runs with its production Kafka settings

PostgreSQL and Kafka stay local, and kubepay's processes still run on this machine (like `kubepay operator`
run from a laptop against a cluster).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Targets", "TargetsError", "tenant_kubeconfig"]

ENV_KUBECONFIG = "KUBEPAY_E2E_KUBECONFIG"
ENV_CONTEXT = "KUBEPAY_E2E_CONTEXT"
ENV_STRIPE_KEY = "KUBEPAY_E2E_STRIPE_KEY"
ENV_REAL = "KUBEPAY_E2E_REAL"
# kubeconfig fields holding file names, which are relative to the kubeconfig's folder.
_FILE_FIELDS = ("certificate-authority", "client-certificate", "client-key", "tokenFile")


class TargetsError(ValueError):
    """A KUBEPAY_E2E_* setting is unusable; the message names it."""


@dataclass(frozen=True)
class Targets:
    kubeconfig: Path | None = None  # None: the Kubernetes API emulator
    context: str | None = None
    stripe_key: str | None = None  # None: the Stripe fake
    real_parts: bool = False  # the sandbox starts a real control plane (and Apache Kafka) itself

    def __post_init__(self) -> None:
        if self.real_parts and self.kubeconfig is not None:
            raise TargetsError(f"{ENV_REAL}=1 starts a control plane; {ENV_KUBECONFIG} names another: set one")
        if self.context and self.kubeconfig is None:
            raise TargetsError(f"{ENV_CONTEXT} is set but {ENV_KUBECONFIG} is not")
        if self.kubeconfig is not None and not self.kubeconfig.is_file():
            raise TargetsError(f"{ENV_KUBECONFIG}: no such file: {self.kubeconfig}")
        if self.stripe_key is not None and not self.stripe_key.startswith("sk_test_"):
            raise TargetsError(f"{ENV_STRIPE_KEY} must be a Stripe test-mode secret key (sk_test_...)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Targets:
        env = os.environ if environ is None else environ
        kubeconfig = env.get(ENV_KUBECONFIG, "").strip()
        real = env.get(ENV_REAL, "").strip()
        if real not in ("", "0", "1"):
            raise TargetsError(f"{ENV_REAL} must be 1 or 0, not {real!r}")
        return cls(
            kubeconfig=Path(kubeconfig).expanduser().resolve() if kubeconfig else None,
            context=env.get(ENV_CONTEXT, "").strip() or None,
            stripe_key=env.get(ENV_STRIPE_KEY, "").strip() or None,
            real_parts=real == "1",
        )

    @property
    def real_kube(self) -> bool:
        return self.kubeconfig is not None or self.real_parts

    @property
    def real_stripe(self) -> bool:
        return self.stripe_key is not None

    @property
    def context_name(self) -> str:
        return self.context or "(current-context)"

    def describe(self) -> str:
        kube = ("a local control plane and Apache Kafka" if self.real_parts
                else f"context {self.context_name} of {self.kubeconfig}" if self.real_kube else "the API emulator")
        stripe = "Stripe test mode" if self.real_stripe else "the Stripe fake"
        return f"Kubernetes: {kube}; Stripe: {stripe}"


def tenant_kubeconfig(source: Path, context: str | None, namespace: str, path: Path) -> Path:
    """Write a kubeconfig with only `context` of `source` (its cluster and user), `namespace` as its default."""
    config: dict[str, Any] = yaml.safe_load(source.read_text()) or {}
    name = context or config.get("current-context")
    contexts = {c.get("name"): c for c in config.get("contexts") or []}
    if not name or name not in contexts:
        raise TargetsError(f"{ENV_KUBECONFIG} {source}: no context {name!r} (set {ENV_CONTEXT}; "
                           f"contexts: {', '.join(sorted(map(str, contexts))) or 'none'})")
    ctx = dict(contexts[name].get("context") or {})
    clusters = [c for c in config.get("clusters") or [] if c.get("name") == ctx.get("cluster")]
    users = [u for u in config.get("users") or [] if u.get("name") == ctx.get("user")]
    for entry, key in [*((c, "cluster") for c in clusters), *((u, "user") for u in users)]:
        settings = entry.get(key) or {}
        for field in _FILE_FIELDS:
            if settings.get(field) and not Path(settings[field]).is_absolute():
                settings[field] = str((source.parent / settings[field]).resolve())
    written: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config", "preferences": {}, "clusters": clusters, "users": users,
        "contexts": [{"name": name, "context": {**ctx, "namespace": namespace}}], "current-context": name,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(written, sort_keys=False))
    path.chmod(0o600)
    return path
