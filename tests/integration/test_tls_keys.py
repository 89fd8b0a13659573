"""HTTPS with a self-signed certificate made here, API keys stored as SHA-256 digests, and keys rotated through the
keys file without a restart (issue 35, item 5)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from indexes.indexing.builder import BuildOptions, build_index
from indexes.storage.docstore.layout import IndexRoot
from tests.support import cranfield_docs, write_jsonl
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.server import Server


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tls")
    corpus = write_jsonl(folder / "corpus.jsonl", cranfield_docs(20))
    build_index(corpus, "small", IndexRoot(folder / "root"), BuildOptions(retrievers=("bm25",), progress=False))
    return folder / "root"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A key and a certificate for 127.0.0.1 and localhost, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    keyfile, certfile = folder / "key.pem", folder / "cert.pem"
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return keyfile, certfile


def sha256(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def served(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """HTTPS; an admin key given only as its digest; search keys from a keys file (one plain, one hashed)."""
    folder = tmp_path_factory.mktemp("certs")
    keyfile, certfile = self_signed(folder)
    keys = folder / "keys"
    keys.write_text(f"# rotated by the test\nsearch old-search-key\nsearch {sha256('hashed-search-key')}\n")
    s = Server(root, env={"HYBRID_ADMIN_KEYS": sha256("the-admin-key"), "HYBRID_KEYS_FILE": str(keys)},
               args=["--ssl-keyfile", str(keyfile), "--ssl-certfile", str(certfile)], key="old-search-key")
    yield s, keys
    s.stop()


def _search(server: Server, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.post(f"{server.url}/v1/indexes/small/search", json={"query": "wing"}, headers=headers,
                   verify=server.verify, timeout=60)
    return r.status_code


def test_https_with_a_self_signed_certificate(served: tuple[Server, Path]) -> None:
    server, _ = served
    assert server.url.startswith("https://")
    assert _search(server, "old-search-key") == 200
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the certificate refuses it
        httpx.post(f"{server.url}/v1/indexes/small/search", json={"query": "wing"}, timeout=10)
    with pytest.raises(httpx.TransportError):  # plain HTTP is not served on the port
        httpx.post(server.url.replace("https://", "http://") + "/v1/indexes/small/search", json={"query": "w"},
                   timeout=10)
    ssl.get_server_certificate(("127.0.0.1", server.port))  # a real TLS handshake on the port


def test_keys_are_stored_as_digests_and_rotate_without_a_restart(served: tuple[Server, Path]) -> None:
    server, keys = served
    assert _search(server, None) == 401
    assert _search(server, "hashed-search-key") == 200  # a key configured only as its sha256
    assert _search(server, sha256("hashed-search-key")) == 403  # the digest itself is not a key
    assert _search(server, "the-admin-key") == 200  # admin keys search too
    reload = httpx.post(f"{server.url}/v1/indexes/small/reload", verify=server.verify, timeout=120,
                        headers={"Authorization": "Bearer old-search-key"})
    assert reload.status_code == 403 and "admin key" in reload.json()["error"]["message"]
    pid = server.proc.pid
    # Rotation: the new key added, then the old one removed; no restart.
    keys.write_text(f"search old-search-key\nsearch {sha256('new-search-key')}\n")
    _eventually(lambda: _search(server, "new-search-key") == 200)
    keys.write_text(f"search {sha256('new-search-key')}\nadmin {sha256('second-admin')}\n")
    _eventually(lambda: _search(server, "old-search-key") == 403)
    assert _search(server, "new-search-key") == 200 and _search(server, "second-admin") == 200
    # A broken file mid-rotation keeps the last good keys.
    keys.write_text("nonsense line\n")
    time.sleep(1.5)
    assert _search(server, "new-search-key") == 200
    assert server.proc.pid == pid and server.proc.poll() is None


def _eventually(check, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + seconds
    while not check():
        assert time.time() < deadline, "the keys file change was not picked up"
        time.sleep(0.2)


def test_serve_refuses_half_a_tls_pair_and_a_bad_keys_file(root: Path, tmp_path: Path) -> None:
    keyfile, certfile = self_signed(tmp_path)
    assert_one_line_error(run_cli("serve", "--ssl-keyfile", str(keyfile), root=root), "--ssl-certfile")
    bad = tmp_path / "keys"
    bad.write_text("search\n")
    import os
    os.environ["HYBRID_KEYS_FILE"] = str(bad)
    try:
        assert_one_line_error(run_cli("serve", root=root), "keys:1")
    finally:
        del os.environ["HYBRID_KEYS_FILE"]
