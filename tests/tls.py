"""A throwaway certificate authority and an HTTPS server on 127.0.0.1 for the TLS tests.

The CA and the server's certificate (for ``127.0.0.1`` and ``localhost``) are made in the test
with ``cryptography``; nothing here is trusted by any store on the machine.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.local_http import LocalServer, QuietHandler


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class LocalCA:
    """A CA whose certificate is written to ``folder/ca.pem``, and a server certificate it signed
    (``server.pem`` and ``server-key.pem``) for 127.0.0.1, ::1 and localhost."""

    def __init__(self, folder: Path, name: str = "memories-provider test CA") -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("localhost"))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("::1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        folder.mkdir(parents=True, exist_ok=True)
        self.ca_pem = folder / "ca.pem"
        self.ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        self.cert_pem = folder / "server.pem"
        self.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_pem = folder / "server-key.pem"
        self.key_pem.write_bytes(_pem_key(key))

    def server_context(self) -> ssl.SSLContext:
        """The server side of the TLS handshake, with the certificate this CA signed."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_pem, self.key_pem)
        return context


class TLSServer(LocalServer):
    """``handler`` served over HTTPS (``ca``'s server certificate) on a free port of 127.0.0.1."""

    def __init__(self, handler: Callable[..., BaseHTTPRequestHandler], ca: LocalCA) -> None:
        super().__init__(handler, poll_interval=0.05)
        context = ca.server_context()
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.port}"


class UniqueIds(QuietHandler):
    """``list_unique_ids`` answered with one namespace, ``tls``, whatever the path."""

    def do_GET(self) -> None:
        body = json.dumps({"code": "0000", "msg": "success", "data": {"unique_ids": ["tls"]}}).encode()
        self.send_body(200, {"Content-Type": "application/json"}, body)
