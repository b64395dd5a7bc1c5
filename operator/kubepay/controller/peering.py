"""kopf peering among the controllers of one shard: one works, the others wait on standby and take over.

kopf pauses a controller while a live peer has a higher priority, and pauses all of them while two share the
highest: its default priority, 0 for everyone, would leave a shard with two replicas unserved. So each controller
takes a priority of its own that falls with its start time: the longest-running one is active, and a replica that
starts later (a restart, a rolling update) joins on standby instead of taking the work over mid-flight. A
controller that stops cleanly leaves the peering at once; one that dies counts as gone once its last keep-alive
is older than the lifetime (KUBEPAY_PEERING_LIFETIME).
"""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid

import kopf

from kubepay.config import Settings

# Who this controller is among its peers (kopf's format: the pod's name in a cluster) and its priority:
# microseconds since the epoch, negated, so no two replicas share one and the longest-running one wins.
IDENTITY = os.environ.get("POD_ID") or f"{getpass.getuser()}@{socket.gethostname()}/{uuid.uuid4().hex[:8]}"
PRIORITY = -(time.time_ns() // 1000)


def configure(settings: kopf.OperatorSettings, config: Settings) -> None:
    settings.peering.priority = PRIORITY
    settings.peering.lifetime = config.peering_lifetime
