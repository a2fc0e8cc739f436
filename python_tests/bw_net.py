"""Ports and sockets in the test suites: free and taken ports, plain connections, and the TCP sockets
a process holds (from /proc).

Importable in every runtime (venv Python, Blender's Python): standard library only.
"""

from __future__ import annotations

import contextlib
import os
import socket

__all__ = ["HOST", "connect", "connection_refused", "free_port", "port_is_bindable", "taken_port", "tcp_sockets"]

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def taken_port(backlog: int = 1):
    """A port on 127.0.0.1 held by a listening socket (no SO_REUSEADDR) for the `with` block: for
    "the port is taken" tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((HOST, 0))
        holder.listen(backlog)
        yield holder.getsockname()[1]


def port_is_bindable(port: int, host: str = HOST) -> bool:
    """True if a listening socket can bind host:port now (with SO_REUSEADDR, as every server does)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(1)
        return True
    except OSError:
        return False
    finally:
        s.close()


def connection_refused(port: int, host: str = HOST) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def connect(port: int, host: str = HOST, timeout: float = 60.0) -> socket.socket:
    """A plain TCP connection with TCP_NODELAY (as every client here uses) and `timeout` per I/O."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def tcp_sockets(pid="self") -> list[tuple[int, str, int, int]]:
    """The TCP sockets (IPv4 and IPv6) that process `pid` holds, from /proc: (inode, state, local
    port, remote port) each, state as /proc/net/tcp writes it ("0A" listening, "01" established)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile, or the directory fd of the listdir itself
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10 or cols[9] not in inodes:
                continue
            local, remote = (int(c.rsplit(":", 1)[1], 16) for c in (cols[1], cols[2]))
            out.append((int(cols[9]), cols[3], local, remote))
    return out
