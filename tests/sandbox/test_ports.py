"""Ports for the sandbox's servers: free, never from the kernel's ephemeral range, never handed out twice."""

from __future__ import annotations

import socket

from kubepay_sandbox.child import EPHEMERAL, HOST, free_port


def test_ports_are_free_distinct_and_outside_the_ephemeral_range() -> None:
    low, high = (int(v) for v in EPHEMERAL.read_text().split())
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert not any(low <= port <= high for port in ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, ports[-1]))  # still free: a server can take it
