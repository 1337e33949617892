"""Loopback ports for the servers and process groups the tests start."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on now (the system's choice for port 0). Another program may take it
    before the caller binds it: a caller that can tell (a server's start failing on its port) tries another."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
