"""Free TCP ports: a server this toolkit starts takes another when its port is busy."""

from __future__ import annotations

import socket


def port_is_free(host: str, port: int) -> bool:
    """Returns whether a TCP server could listen on ``host:port`` now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """Returns a TCP port on ``host`` that no server listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
