"""The emulator itself: its parts put together, served in a thread of its own, and what tests and the harness call
(the URL, a kubeconfig, reads of the stored objects, denials, the reviews)."""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import yaml

from kubepay_sandbox.child import HOST
from kubepay_sandbox.kube_emulator.admission import Denials
from kubepay_sandbox.kube_emulator.discovery import Handler
from kubepay_sandbox.kube_emulator.resources import BUILTINS, Resource, resources_from_crd
from kubepay_sandbox.kube_emulator.reviews import Reviews
from kubepay_sandbox.kube_emulator.routing import Api
from kubepay_sandbox.kube_emulator.selectors import Selector
from kubepay_sandbox.kube_emulator.storage import Store
from kubepay_sandbox.kube_emulator.writes import Writes


class KubeEmulator:
    """
    A stateful Kubernetes API server in memory, served over HTTP on 127.0.0.1.

    ``crd_paths`` are CRD YAML files (several documents per file are fine) whose served
    versions become resources. Objects survive :meth:`stop`; :meth:`start` resumes on the
    same port with the same cluster state, as after an API server outage.
    """

    def __init__(self, crd_paths: Sequence[Path] = (), *, history_limit: int = 10_000) -> None:
        self._store = Store(history_limit)
        self._denials = Denials()
        self._port: int | None = None
        self._runner: aiohttp.web.ServerRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.reviews = Reviews()  # TokenReview and SubjectAccessReview; tests issue tokens and rules here
        self._handler = Handler(api=Api(self._store, Writes(self._store, self._denials), self.reviews))
        self._url: str | None = None
        for group, version, plural, kind in self.reviews.apis():
            self._handler.register_create_only(group, version, plural, kind)

        for res in BUILTINS:
            self._register(res)
        for path in crd_paths:
            for doc in yaml.safe_load_all(Path(path).read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    for res in resources_from_crd(doc):
                        self._register(res)
        for namespace in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self._store.ensure_namespace(namespace)

    def _register(self, res: Resource) -> None:
        self._store.register(res)
        self._handler.register(res)

    # ----------------------------------------------------------------------------------------------
    # Serving
    # ----------------------------------------------------------------------------------------------

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1 (a free port if 0, or the previous one after :meth:`stop`)."""
        if self._loop is not None:
            return self.url
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name="kube-emulator", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._start(port), loop))
        except BaseException:
            await self._stop_thread()
            raise
        return self.url

    async def stop(self) -> None:
        """Stop listening and close all watch streams; the objects are kept."""
        if self._loop is None:
            return
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._stop(), self._loop))
        finally:
            await self._stop_thread()

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join)

    async def _start(self, port: int) -> None:
        # Runs in the emulator's own thread and event loop, so that the server stays responsive when the
        # caller's loop is busy or blocked (sync clients, kubectl), and its tasks never mix with the
        # caller's (kopf waits for all tasks spawned while it runs, e.g. server-side keep-alive connections).
        if port == 0 and self._port is not None:
            port = self._port
        server = aiohttp.web.Server(self._handler, handler_cancellation=True)
        runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, HOST, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._url = f"http://{HOST}:{self._port}"

    async def _stop(self) -> None:
        self._store.end_watches()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("The emulator has not been started yet.")
        return self._url

    @property
    def kmock_handler(self) -> kmock.KubernetesScaffold:
        """The underlying kmock handler (for extra reactions or discovery tweaks)."""
        return self._handler

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig (plain http, no auth) for kopf, kubernetes(_asyncio) and kubectl."""
        name = "kubepay-sandbox"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": name, "cluster": {"server": self.url}}],
            "users": [{"name": name, "user": {}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
            "current-context": name,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # ----------------------------------------------------------------------------------------------
    # What tests and the harness read and control
    # ----------------------------------------------------------------------------------------------

    def get(self, group_version_plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A copy of a stored object, or None; e.g. ``get("v1/secrets", "ns", "x")``."""
        res = self._store.lookup(group_version_plural)
        with self._store.lock:
            obj = self._store.find(res, namespace, name)
            return self._store.output(res, obj) if obj is not None else None

    def list(self, group_version_plural: str, namespace: str | None = None) -> builtins.list[dict[str, Any]]:
        """Copies of the stored objects of a resource, all namespaces if ``namespace`` is None."""
        res = self._store.lookup(group_version_plural)
        with self._store.lock:
            return [self._store.output(res, obj) for obj in self._store.select(res, namespace, Selector())]

    @property
    def resource_version(self) -> str:
        """The current (latest) resourceVersion of the whole cluster."""
        return str(self._store.rv)

    def deny(self, plural: str, namespace: str, message: str | None) -> None:
        """Refuse creates and updates of `plural` objects in `namespace` as a ValidatingAdmissionPolicy denying
        them would (422 Invalid with the policy's message); `None` lifts the denial."""
        self._denials.deny(plural, namespace, message)
