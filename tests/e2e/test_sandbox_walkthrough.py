"""The README's "Your own processes against the sandbox", step by step, as a user types it: `kubepay-sandbox up
--forward-to`, a plain `source` of its env file, the user's own `kubepay operator` and `kubepay webhook`, the real
kubectl, the README's curl to pay, and the payment's webhook reaching the user's receiver.

Each step is the README's text (the test checks it is there), with the test's own env file, port and executables
put in: `.sandbox.env` -> a file in tmp_path, 8080 -> a free port, `.venv/bin/` -> this interpreter's folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubepay_sandbox.child import free_port
from kubepay_sandbox.processes import KubepayProcess
from tests.chart.tools import ensure_tools
from tests.helpers import fetch, wait_for

REPO = Path(__file__).resolve().parents[2]
SECTION = "### Your own processes against the sandbox"
# Generous: the sandbox starts PostgreSQL, Kafka, the Stripe fake and the emulator on 2 shared cores.
START = 120.0
DEADLINE = 90.0

SANDBOX = ".venv/bin/kubepay-sandbox up --env-file .sandbox.env --forward-to http://127.0.0.1:8080/payments/webhook"
SOURCE = "source .sandbox.env"
OPERATOR, WEBHOOK = "kubepay operator", "kubepay webhook"
APPLY = "kubectl apply -f examples/paymentintent.yaml"
PAY = """PI=$(kubectl get pi order-1111 -o jsonpath='{.status.stripe.paymentIntentId}')
curl -sS -u "$STRIPE_SECRET_KEY:" -d payment_method=pm_card_visa -d return_url=https://example.com \\
  "$KUBEPAY_STRIPE_API_BASE/v1/payment_intents/$PI/confirm\""""
GET = "kubectl get pi"


def walkthrough() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION)
    end = min(i for i in (text.find("\n## ", start), text.find("\n### ", start + 1), len(text)) if i >= 0)
    return text[start:end]


def table(printed: str) -> list[dict[str, str]]:
    """kubectl's table output, cut at the header's column starts (a cell may be empty)."""
    header, *lines = printed.splitlines() or [""]
    columns = list(re.finditer(r"\S+(?: \S+)*", header))  # "STRIPE ID" is one column
    bounds = [(c.group(), c.start(), nxt.start() if nxt else None)
              for c, nxt in zip(columns, [*columns[1:], None], strict=True)]
    return [{name: line[start:end].strip() for name, start, end in bounds} for line in lines]


async def shell(command: str, env: dict[str, str], timeout: float = 60.0) -> str:
    """``bash -c command`` in the checkout; its stdout, after asserting it succeeded."""
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", command, cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise AssertionError(f"{command!r} still running after {timeout}s") from None
    assert process.returncode == 0, f"{command!r} exited {process.returncode}: {err.decode()}"
    return out.decode()


async def sourced(env_file: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment after a plain ``source`` of the env file in a real bash."""
    out = await shell(f"{SOURCE.replace('.sandbox.env', str(env_file))} && env -0", env)
    return dict(entry.split("=", 1) for entry in out.split("\0") if entry)


async def stop_sandbox(process: asyncio.subprocess.Process) -> int:
    """Ctrl-C, as the user stops it; SIGKILL if it has not finished cleaning up within a minute."""
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            process.kill()
            await process.wait()
    return process.returncode or 0


@pytest.mark.timeout(600)
async def test_readme_walkthrough_pays_through_the_users_own_receiver(tmp_path: Path) -> None:
    section = walkthrough()
    for step in (SANDBOX, SOURCE, OPERATOR, WEBHOOK, APPLY, GET, PAY):
        assert step in section, f"the README walk-through no longer says: {step}"

    tools = await asyncio.to_thread(ensure_tools)  # the pinned kubectl (may download once, under a lock)
    port = free_port()
    env_file = tmp_path / "sandbox.env"
    bin_dir = Path(sys.executable).parent  # what `source .venv/bin/activate` puts on PATH
    path = os.pathsep.join([str(tools["kubectl"].parent), str(bin_dir), os.environ["PATH"]])
    user_env = {**os.environ, "PATH": path, "KUBECACHEDIR": str(tmp_path / "kube-cache"), "PYTHONUNBUFFERED": "1"}
    user_env.pop("KUBECONFIG", None)
    command = (SANDBOX.replace(".venv/bin/", f"{bin_dir}/")
               .replace(".sandbox.env", str(env_file)).replace("8080", str(port)))
    sandbox_log = tmp_path / "sandbox.log"
    processes: list[KubepayProcess] = []
    with sandbox_log.open("wb") as log:
        sandbox = await asyncio.create_subprocess_exec(*shlex.split(command), cwd=REPO, env=user_env, stdout=log,
                                                       stderr=asyncio.subprocess.STDOUT,
                                                       stdin=asyncio.subprocess.DEVNULL)
    try:
        async def env_file_written() -> bool:
            assert sandbox.returncode is None, f"kubepay-sandbox up exited:\n{sandbox_log.read_text()}"
            return env_file.exists()

        await wait_for(env_file_written, START, "kubepay-sandbox up to write its env file")
        assert env_file.read_text().count("\nexport ") >= 10

        # Second and third terminal: `source .sandbox.env`, then `kubepay operator` / `kubepay webhook`.
        env = await sourced(env_file, user_env)
        assert env["PAYMENT_HTTP_PORT"] == str(port)  # the receiver listens where --forward-to sends
        assert env["STRIPE_WEBHOOK_SECRET"].startswith("whsec_")
        ready = {OPERATOR: env["KUBEPAY_HEALTH_PORT"], WEBHOOK: env["PAYMENT_HTTP_PORT"]}
        for step in (OPERATOR, WEBHOOK):
            subcommand = step.split()[1]
            # Each has its own metrics port by default (9090, 9091); a test takes free ones instead.
            own = {**env, "KUBEPAY_METRICS_PORT": str(free_port())}
            processes.append(KubepayProcess(subcommand, own, f"http://127.0.0.1:{ready[step]}/readyz",
                                            tmp_path / f"{subcommand}.log"))
        await asyncio.gather(*(p.start(ready_timeout=DEADLINE) for p in processes))

        # Fourth terminal: apply, wait for the Stripe id, pay with the README's curl, watch `kubectl get pi`.
        applied = await shell(APPLY, env)
        assert applied.strip() == "paymentintent.kubepay.io/order-1111 created", applied

        async def row() -> dict[str, str] | None:
            return next((r for r in table(await shell(GET, env)) if r.get("NAME") == "order-1111"), None)

        async def stripe_id() -> str | None:
            found = (await row() or {}).get("STRIPE ID", "")
            return found if found.startswith("pi_") else None

        intent_id = await wait_for(stripe_id, DEADLINE, "a Stripe id in kubectl get pi")
        paid = json.loads(await shell(PAY, env))
        assert (paid["id"], paid["status"]) == (intent_id, "succeeded"), paid

        async def succeeded() -> bool:
            return (await row() or {}).get("PHASE") == "Succeeded"

        await wait_for(succeeded, DEADLINE, "kubectl get pi to show order-1111 Succeeded")

        # The kubeconfig the sandbox printed works on its own, without the env file.
        printed = re.search(r"kubectl --kubeconfig (\S+) get pi", sandbox_log.read_text())
        assert printed is not None, sandbox_log.read_text()
        assert printed.group(1) == env["KUBECONFIG"]
        phase = await shell(
            f"kubectl --kubeconfig {printed.group(1)} get pi order-1111 -o jsonpath='{{.status.phase}}'", user_env)
        assert phase == "Succeeded"

        # Stripe's payment_intent.succeeded reached the user's receiver: its metrics, the ledger row it
        # wrote, and the delivery line in the sandbox's terminal.
        async with aiohttp.ClientSession() as session, \
                session.get(processes[1].metrics_url) as response:
            metrics = await response.text()
        counted = [sample.value for family in text_string_to_metric_families(metrics) for sample in family.samples
                   if sample.name == "kubepay_webhook_events_total"
                   and sample.labels == {"type": "payment_intent.succeeded", "outcome": "applied"}]
        assert counted and counted[0] >= 1, metrics
        ledger = await fetch(env["DATABASE_URL"], "SELECT type, outcome FROM payment_events "
                             "WHERE provider_payment_id = $1", intent_id)
        assert {"type": "payment_intent.succeeded", "outcome": "applied"} in ledger, ledger
        delivered = re.compile(rf"--> payment_intent\.succeeded \[evt_\w+\] <-- \[200\] POST "
                               rf"http://127\.0\.0\.1:{port}/payments/webhook")

        async def delivery_printed() -> bool:
            return bool(delivered.search(sandbox_log.read_text()))

        await wait_for(delivery_printed, DEADLINE, "the sandbox to print the delivery")
    finally:
        await asyncio.gather(*(p.stop() for p in processes))
        returncode = await stop_sandbox(sandbox)
    assert returncode == 0, sandbox_log.read_text()
    assert not env_file.exists(), "Ctrl-C should delete the env file with the sandbox's data"
