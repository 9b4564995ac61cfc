"""CSRs that ask acme-server for more than the order's names were validated for."""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devtls.acmeserver.allowlist import AllowList
from devtls.acmeserver.service import AcmeService
from devtls.ca import LocalCA
from tests.acmeserver.fakeclient import Client, body
from tests.acmeserver.test_protocol import validated_order


def test_the_leaf_names_only_what_was_validated() -> None:
    # Validation proves control of the names, nothing about an organisation or a country: a
    # CSR's other subject attributes are not the CA's to assert (RFC 8555 7.4, as Let's
    # Encrypt and Pebble issue: a common name at most).
    ca = LocalCA.ephemeral()
    service = AcmeService(lambda: ca, AllowList.parse(()), days=7)
    client = Client(service)
    assert client.register().status == 201
    order = validated_order(service, client, "shop.localhost")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "A Bank That Is Not Me"),
            x509.NameAttribute(NameOID.COMMON_NAME, "shop.localhost"),
        ]
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("shop.localhost")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    der = csr.public_bytes(serialization.Encoding.DER)
    done = client.post(
        order["finalize"], {"csr": base64.urlsafe_b64encode(der).rstrip(b"=").decode()}
    )
    assert done.status == 200, done.body
    chain = client.post(body(done)["certificate"], None).body
    leaf = x509.load_pem_x509_certificates(chain)[0]
    assert leaf.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop.localhost")])
