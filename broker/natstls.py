"""A throwaway certificate authority for the demo, the tests and ``ixb compose prepare``.

Every NATS link of a federation runs over TLS (docs/deploying.md, "TLS"): the
client listener presents a server certificate, leaf links are mutual TLS.
Real operators bring their own CA and certificates; this module makes a CA
that lives only as long as the deployment directory, and one certificate per
country's server, valid for the names it is reached by (``127.0.0.1``,
``localhost`` and, in containers, its service name) and usable both as a
server and as a client certificate (a dialing server presents the same one
to the peer it dials).

Keys are ECDSA P-256, made by ``cryptography``; the CA's private key is never
written to disk. Key files are mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.natsd import write_private
from broker.natsplan import FederationPlan
from protocols.errors import ConfigError

CA_VALIDITY = datetime.timedelta(days=365)
CERT_VALIDITY = datetime.timedelta(days=90)
_BACKDATE = datetime.timedelta(minutes=5)
"""Certificates start a little in the past: clocks of two machines differ."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass(frozen=True)
class IssuedCert:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    def write(self, cert_file: Path, key_file: Path) -> None:
        """The certificate (0644 is fine, but 0600 costs nothing) and its key (0600)."""
        write_private(cert_file, self.cert_pem.decode("ascii"))
        write_private(key_file, self.key_pem.decode("ascii"))


class ThrowawayCA:
    """A self-signed CA in memory that issues server and client certificates."""

    def __init__(
        self,
        name: str = "ixb throwaway CA",
        *,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> None:
        start = not_before or _now() - _BACKDATE
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        public = self._key.public_key()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(not_after or start + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )

    def __repr__(self) -> str:  # never the key
        return f"ThrowawayCA({self._cert.subject.rfc4514_string()})"

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        names: Sequence[str],
        *,
        common_name: str | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> IssuedCert:
        """A certificate for ``names`` (DNS names or IP addresses), server and client use."""
        if not names:
            raise ConfigError("a certificate needs at least one name")
        start = not_before or _now() - _BACKDATE
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key()
        ca_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or names[0])])
            )
            .issuer_name(self._cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(not_after or start + CERT_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in dict.fromkeys(names)]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return IssuedCert(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )


def server_names(plan: FederationPlan, country: str) -> list[str]:
    """The names ``country``'s servers are reached by: each node's host, 127.0.0.1,
    localhost (the nodes of a cluster share one certificate, also on their routes)."""
    hosts = [n.host for n in plan.members(country)]
    return list(dict.fromkeys([*hosts, "127.0.0.1", "localhost"]))


def write_throwaway_tls(
    plan: FederationPlan, out_dir: Path | None = None, *, ca: ThrowawayCA | None = None
) -> ThrowawayCA:
    """A CA and every server's certificate, under the file names the plan gives.

    ``out_dir``: where to write them (default: where the plan says, i.e. where
    the servers see them; a container sees ``out_dir`` mounted elsewhere).
    """
    ca = ca or ThrowawayCA(f"ixb throwaway CA {'-'.join(plan.countries)}")

    def where(path: Path) -> Path:
        return path if out_dir is None else out_dir / path.name

    for country in plan.countries:
        tls = plan.node(country).tls
        if tls is None:
            raise ConfigError(f"the federation plan has no TLS files for {country}")
        write_private(where(tls.ca_file), ca.cert_pem.decode("ascii"))
        ca.issue(server_names(plan, country), common_name=f"ixb-{country}").write(
            where(tls.cert_file), where(tls.key_file)
        )
    return ca
