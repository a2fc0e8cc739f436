"""The router over TLS against a real python-socketio engine served by aiohttp with a certificate
from the test's own CA (certs.py, Debian's openssl), in real Blender (`blendwire serve`).

Trust is the system's store plus BLENDWIRE_CA_FILE; a certificate the router refuses (unknown
issuer, wrong name) is a failed attempt like a refused connection: the status and the log say why
and how to fix it, retries go on with backoff, and a good certificate is taken at the next try.
"""

import os
import subprocess

import bwtest
import pytest
from certs import CA, Cert, make_ca, make_cert
from engine_peer import EnginePeer
from test_router import ADDON_ID, TOKEN, execute, serve_router, stderr_text, wait_router

pytestmark = pytest.mark.background


def make_expired_cert(folder, ca: CA, host: str) -> Cert:
    """A certificate for `host` signed by `ca` that expired in 2020 (`openssl ca` takes explicit
    dates, `openssl x509 -req` does not)."""
    key, csr, pem, ext = (folder / f"expired.{suffix}" for suffix in ("key", "csr", "pem", "ext"))
    ext.write_text(f"subjectAltName=IP:{host}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    (folder / "index.txt").write_text("")
    (folder / "serial").write_text("01\n")
    cnf = folder / "ca.cnf"
    cnf.write_text(
        f"[ca]\ndefault_ca = t\n[t]\ndatabase = {folder}/index.txt\nnew_certs_dir = {folder}\n"
        f"serial = {folder}/serial\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n"
    )
    for cmd in (
        ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        + ["-keyout", key, "-out", csr, "-subj", f"/CN={host}"],
        ["ca", "-batch", "-config", cnf, "-cert", ca.pem, "-keyfile", ca.key, "-in", csr, "-out", pem]
        + ["-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-extfile", ext],
    ):
        done = subprocess.run(["openssl", *map(str, cmd)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    chain = folder / "expired-chain.pem"
    chain.write_text(pem.read_text() + ca.pem.read_text())
    return Cert(key, pem, chain)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA with a good certificate for 127.0.0.1 (the peer's address), one for another name, an
    expired one, and a certificate for 127.0.0.1 from a CA nobody trusts."""
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder, "bw-test-ca")
    rogue = make_ca(folder, "bw-rogue-ca")
    return {
        "ca": ca,
        "good": make_cert(folder, ca, "good", ["127.0.0.1", "localhost"]),
        "wrong_name": make_cert(folder, ca, "wrong-name", ["engine.example"]),
        "expired": make_expired_cert(folder, ca, "127.0.0.1"),
        "untrusted": make_cert(folder, rogue, "untrusted", ["127.0.0.1"]),
    }


def tls_peer(cert):
    return EnginePeer(token=TOKEN, certfile=cert.chain, keyfile=cert.key)


def test_https_engine_with_the_ca_file_connects_and_commands_round_trip(serve_factory, pki):
    peer = tls_peer(pki["good"]).start()
    try:
        assert peer.url.startswith("https://")
        sp = serve_router(serve_factory, peer, env={"BLENDWIRE_CA_FILE": str(pki["ca"].pem)})
        reg = peer.wait_connected()
        assert reg["data"]["type"] == "registry_updated"
        mid = peer.send_command(ADDON_ID, "echo", {"over": "tls"})
        reply = peer.wait_reply(mid)["data"]
        assert reply["type"] == "command_completed" and reply["payload"]["data"] == {"echo": {"over": "tls"}}
        st = wait_router(sp, lambda st: st["state"] == "connected", "connected")
        assert st["url"] == peer.url and st["consecutive_failures"] == 0
    finally:
        peer.kill()


def test_refused_certificates_are_retried_until_a_good_one_is_served(serve_factory, pki):
    peer = tls_peer(pki["untrusted"]).start()
    try:
        sp = serve_router(serve_factory, peer, env={"BLENDWIRE_CA_FILE": str(pki["ca"].pem)})
        # An issuer the router does not trust: failed attempts, retried, saying why and what to do.
        st = wait_router(sp, lambda st: st["consecutive_failures"] >= 3, "failed attempts (untrusted issuer)")
        assert st["state"] in ("backoff", "connecting")
        assert st["last_error"].startswith('TLS: the certificate the engine presented for "127.0.0.1"'), st
        assert "does not trust" in st["last_error"] and "BLENDWIRE_CA_FILE" in st["last_error"], st
        assert 'signed by "CN=bw-rogue-ca"' in st["last_error"], st  # which CA
        bwtest.wait_for(lambda: "does not trust" in stderr_text(sp), 10, "the refusal in the log")
        assert not peer.find(lambda r: r["kind"] == "connect"), "no Socket.IO connect through a refused certificate"

        # The right CA, the wrong name: refused, naming the name the URL uses.
        peer.kill()
        peer.certfile, peer.keyfile = pki["wrong_name"].chain, pki["wrong_name"].key
        peer.start()
        attempts = st["attempts"]
        st = wait_router(
            sp,
            lambda st: st["attempts"] >= attempts + 3 and "not valid for the name" in (st["last_error"] or ""),
            "failed attempts (wrong name)",
        )
        assert '"127.0.0.1"' in st["last_error"] and "engine.example" in st["last_error"], st

        # The right CA and name, but expired.
        peer.kill()
        peer.certfile, peer.keyfile = pki["expired"].chain, pki["expired"].key
        peer.start()
        attempts = st["attempts"]
        st = wait_router(
            sp,
            lambda st: st["attempts"] >= attempts + 2 and "validity period" in (st["last_error"] or ""),
            "failed attempts (expired)",
        )
        assert "certificate expired" in st["last_error"] and "renew it" in st["last_error"], st

        # A good certificate: the next attempt connects; commands round-trip.
        peer.kill()
        n = len(peer.snapshot())
        peer.certfile, peer.keyfile = pki["good"].chain, pki["good"].key
        peer.start()
        peer.wait_connected(start=n)
        st = wait_router(sp, lambda st: st["state"] == "connected", "connected with the good certificate")
        assert st["consecutive_failures"] == 0
        mid = peer.send_command(ADDON_ID, "echo", {"n": 1})
        assert peer.wait_reply(mid)["data"]["type"] == "command_completed"
        assert sp.proc.poll() is None, sp.output()
        execute(sp, "pass")  # the service kept serving meanwhile
    finally:
        peer.kill()


def test_without_the_ca_file_a_private_ca_is_refused(serve_factory, pki):
    """No CA file (and an empty BLENDWIRE_CA_FILE counts as none): only the system store, which does
    not hold the test's CA."""
    peer = tls_peer(pki["good"]).start()
    try:
        sp = serve_router(serve_factory, peer, env={"BLENDWIRE_CA_FILE": ""})
        st = wait_router(sp, lambda st: st["consecutive_failures"] >= 2, "failed attempts (no CA file)")
        assert 'signed by "CN=bw-test-ca", an issuer this router does not trust' in st["last_error"], st
        assert "BLENDWIRE_CA_FILE" in st["last_error"], st
    finally:
        peer.kill()


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "cannot be read"),
        (b"not a certificate\n", "has no certificate"),
        (
            b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
            "has a certificate that cannot be trusted",
        ),
    ],
)
def test_a_bad_ca_file_fails_before_blender_starts(tmp_path, content, expected):
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    serve = [*bwtest.blendwire_command(), "serve", "--blender", "/nonexistent/blender"]
    serve += ["--engine-url", "https://127.0.0.1:8443"]
    env = {**os.environ, "BLENDWIRE_CA_FILE": str(path)}
    by_env = subprocess.run(serve, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert by_env.returncode == 1, (by_env.stdout, by_env.stderr)
    assert f"--ca-file (from $BLENDWIRE_CA_FILE) {expected}" in by_env.stderr, by_env.stderr
    assert f"({path}" in by_env.stderr, by_env.stderr
    assert "Traceback" not in by_env.stderr and "Blender not found" not in by_env.stderr
    by_flag = subprocess.run(
        [*serve, "--ca-file", str(path)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert by_flag.returncode == 1 and f"--ca-file {expected}" in by_flag.stderr, by_flag.stderr


def test_the_core_checks_the_ca_file_once_for_every_caller(pki, monkeypatch, tmp_path):
    """One rule (the core's) for the CLI, `router.start` and the add-on: given, from the
    environment, or empty (none)."""
    from blendwire import _core

    monkeypatch.delenv("BLENDWIRE_CA_FILE", raising=False)
    good = str(pki["ca"].pem)
    assert _core.check_router_settings("https://127.0.0.1:8443", ca_file=good) == []
    assert _core.check_ca_file(good) is None and _core.check_ca_file("") is None
    missing = str(tmp_path / "missing.pem")
    [(name, rule)] = _core.check_router_settings("https://127.0.0.1:8443", ca_file=missing)
    assert name == "ca_file" and rule.startswith(f"cannot be read ({missing}: "), rule
    assert _core.check_ca_file(missing) == rule
    monkeypatch.setenv("BLENDWIRE_CA_FILE", missing)
    [(name, rule)] = _core.check_router_settings("https://127.0.0.1:8443")
    assert name == "ca_file" and rule.startswith("(from $BLENDWIRE_CA_FILE) cannot be read"), rule
    assert _core.check_router_settings("https://127.0.0.1:8443", ca_file=good) == [], "the argument wins"
    with pytest.raises(ValueError, match=r"^ca_file \(from \$BLENDWIRE_CA_FILE\) cannot be read"):
        _core.start_router("https://127.0.0.1:8443")
    assert not _core.router_running()
