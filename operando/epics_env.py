"""Channel Access environment: loopback by default, a port of our own.

Set these before the first signal or client is created (pyepics and caproto read
them once).
"""

from __future__ import annotations

import os
import socket


def free_tcp_udp_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP (CA uses both), with port+1 free for the repeater."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port >= 65534:
            continue
        try:
            for p in (port, port + 1):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind((host, p))
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind((host, p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for Channel Access")


def loopback_env(port: int | None = None, host: str = "127.0.0.1") -> dict[str, str]:
    """CA client and server variables for a private Channel Access on ``host``."""
    port = port or free_tcp_udp_port(host)
    return {
        "EPICS_CA_ADDR_LIST": host,
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CAS_INTF_ADDR_LIST": host,
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_CAS_BEACON_ADDR_LIST": host,
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CAS_SERVER_PORT": str(port),
        "EPICS_CA_REPEATER_PORT": str(port + 1),
        "EPICS_CAS_BEACON_PORT": str(port + 1),
    }


def reach(port: int, host: str = "127.0.0.1") -> None:
    """Let this process's CA clients search ``host:port`` too.

    Two servers on one port of 127.0.0.1 do not both answer searches, so each
    simulator gets its own port and the clients list every one of them
    (caproto's client reads the address list at each search).
    """
    os.environ["EPICS_CA_AUTO_ADDR_LIST"] = "NO"
    entries = os.environ.get("EPICS_CA_ADDR_LIST", "").split()
    entry = f"{host}:{port}"
    if entry not in entries:
        entries.append(entry)
    os.environ["EPICS_CA_ADDR_LIST"] = " ".join(entries)


def forget(port: int, host: str = "127.0.0.1") -> None:
    entries = os.environ.get("EPICS_CA_ADDR_LIST", "").split()
    entry = f"{host}:{port}"
    if entry in entries:
        entries.remove(entry)
        os.environ["EPICS_CA_ADDR_LIST"] = " ".join(entries) or host


def apply(env: dict[str, str]) -> None:
    os.environ.update(env)


def use_loopback_if_unset() -> dict[str, str]:
    """Loopback CA unless the user configured an address list already."""
    if "EPICS_CA_ADDR_LIST" in os.environ:
        return {}
    env = loopback_env()
    apply(env)
    return env
