"""Apache Kafka itself on 127.0.0.1: one KRaft node (broker and controller) from Maven Central's jars.

`make kafka` fetches the jars that tools/kafka/pom.xml names into .cache/kafka/<version>/libs (once).
Unlike tansu this broker runs aiokafka's idempotent producer and transactions, so kubepay's
production settings (``enable_idempotence=True``, ``acks="all"``) can run against it. Its storage
is formatted in a fresh temporary folder on every start and deleted on stop.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from kubepay_sandbox.checkout import REPO
from kubepay_sandbox.child import HOST, die_with_parent, free_port
from kubepay_sandbox.kafka import KafkaBroker, KafkaBrokerError

__all__ = ["ApacheKafka", "kafka_libs", "kafka_version"]

logger = logging.getLogger(__name__)

POM = REPO / "tools" / "kafka" / "pom.xml"
ENV_LIBS = "KUBEPAY_KAFKA_LIBS"  # a folder of Kafka's jars, instead of .cache/kafka/<version>/libs
START_TIMEOUT = 60.0  # a JVM on two busy cores; it usually answers within 4 s
FORMAT_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
# A small heap; C1 only and the serial collector: starts in ~3.6 s instead of ~5.3 s on two busy cores,
# with 300 MB RSS instead of 360 MB, and test traffic never needs C2's peak speed.
JVM_OPTIONS = ("-Xms128m", "-Xmx512m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")

# A single node for tests: internal topics with one partition and one replica (the first consumer
# group and the first transaction wait for them), no delay before a group's first rebalance.
SETTINGS = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "num.partitions": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
}

LOG4J2 = """\
status = error
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


def kafka_version() -> str:
    """The Kafka version tools/kafka/pom.xml pins (the one place that names it)."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if found is None:
        raise KafkaBrokerError(f"{POM} has no <kafka.version>")
    return found.group(1).strip()


def kafka_libs() -> Path:
    """The folder of Kafka's jars: $KUBEPAY_KAFKA_LIBS, or what `make kafka` fetched."""
    configured = os.environ.get(ENV_LIBS, "").strip()
    libs = Path(configured) if configured else REPO / ".cache" / "kafka" / kafka_version() / "libs"
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise KafkaBrokerError(f"no Kafka jars in {libs}: run `make kafka` (or set {ENV_LIBS})")
    return libs


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise KafkaBrokerError("no java found (install a JDK 17+ or set JAVA_HOME)")
    return java


def _cluster_id() -> str:
    """A random cluster id as `kafka-storage random-uuid` makes it (URL-safe base64, not starting with '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class ApacheKafka(KafkaBroker):
    """One fresh Apache Kafka node; same interface as the tansu :class:`KafkaBroker`."""

    _what = "Apache Kafka"

    def __init__(self) -> None:
        super().__init__()
        self._dir: Path | None = None

    @property
    def data_dir(self) -> Path | None:
        """The node's temporary folder (configuration and log directory) while started."""
        return self._dir

    async def _launch(self) -> None:
        """Format the storage, start the JVM and wait (with a deadline) until an admin client gets an answer."""
        java, libs = _java(), await asyncio.to_thread(kafka_libs)
        self._dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="kubepay-kafka-"))
        self._port, controller_port = free_port(), free_port()
        config = self._dir / "server.properties"
        settings = {
            **SETTINGS,
            "controller.quorum.voters": f"1@{HOST}:{controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self._port},CONTROLLER://{HOST}:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self._port}",
            "log.dirs": str(self._dir / "data"),
        }
        config.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        (self._dir / "log4j2.properties").write_text(LOG4J2)
        jvm = [java, *JVM_OPTIONS, f"-Dlog4j2.configurationFile={self._dir / 'log4j2.properties'}", "-cp", f"{libs}/*"]
        log = await self._open_temp_log("kubepay-kafka-")
        await self._format(jvm, config)
        await self._spawn(
            *jvm,
            "kafka.Kafka",
            str(config),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop it in order
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        await self._wait_ready(
            self._answers,
            name="Apache Kafka",
            late=f"Apache Kafka did not answer within {START_TIMEOUT}s",
            timeout=START_TIMEOUT,
            interval=0.1,
        )
        logger.info("Apache Kafka running on %s", self.bootstrap_servers)

    async def _format(self, jvm: list[str], config: Path) -> None:
        """`kafka-storage format`: a node refuses to start on an unformatted log directory."""
        proc = await asyncio.create_subprocess_exec(
            *jvm, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(config),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), FORMAT_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise KafkaBrokerError(f"formatting Kafka's storage took over {FORMAT_TIMEOUT}s") from None
        if proc.returncode != 0:
            raise KafkaBrokerError(f"formatting Kafka's storage failed ({proc.returncode}):\n"
                                   f"{output.decode(errors='replace')[-3000:]}")

    async def _answers(self) -> bool:
        if not await self._listening():
            return False
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=2_000)
        try:
            await admin.start()
            await admin.describe_cluster()
        except (KafkaError, OSError, TimeoutError):
            return False
        finally:
            await admin.close()
        return True

    async def stop(self) -> None:
        """Controlled shutdown (SIGTERM; SIGKILL after 15 s), then delete the data and the log."""
        await self._terminate(signal.SIGTERM, STOP_TIMEOUT)
        self._remove_temp_log()
        if self._dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._dir, True)
            self._dir = None
