"""Certificates for the TLS tests, made by Debian's `openssl` with a throwaway CA of the test's own.

`make_ca(folder, name)` writes `<name>.key` / `<name>.pem` (a self-signed CA);
`make_cert(folder, ca, name, hosts)` writes a server key and a certificate for `hosts` (DNS names and
IP addresses, as subjectAltName) signed by that CA. Nothing here is trusted by the system: a client
trusts it only when given the CA file (BLENDWIRE_CA_FILE, or `ssl` in Python).

Standard library only, so the engine peer subprocess and the fleet scripts can import it too.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CA", "Cert", "make_ca", "make_cert"]


@dataclass(frozen=True)
class CA:
    name: str
    key: Path
    pem: Path


@dataclass(frozen=True)
class Cert:
    key: Path
    pem: Path
    chain: Path  # certificate then its CA: what a server (haproxy/nginx/aiohttp) presents


def _openssl(*args: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("openssl not found: scripts/setup installs it (Debian package openssl)")
    done = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {done.stderr.strip()}")


def make_ca(folder: Path, name: str = "blendwire-test-ca") -> CA:
    folder.mkdir(parents=True, exist_ok=True)
    key, pem = folder / f"{name}.key", folder / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(key), "-out", str(pem), "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return CA(name, key, pem)


def _san(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"


def make_cert(folder: Path, ca: CA, name: str, hosts: list[str]) -> Cert:
    """A server certificate for `hosts` signed by `ca` (valid now, for two days)."""
    if not hosts:
        raise ValueError("make_cert needs at least one host name or address")
    folder.mkdir(parents=True, exist_ok=True)
    key, csr, pem = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
    ext = folder / f"{name}.ext"
    ext.write_text(
        f"subjectAltName={','.join(_san(h) for h in hosts)}\n"
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={hosts[0]}")  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.pem), "-CAkey", str(ca.key),
             "-CAcreateserial", "-out", str(pem), "-days", "2", "-extfile", str(ext))  # fmt: skip
    chain = folder / f"{name}-chain.pem"
    chain.write_text(pem.read_text() + ca.pem.read_text())
    return Cert(key, pem, chain)
