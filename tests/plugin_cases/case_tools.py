"""curl and Node in subprocesses verify through devtls_trust; each negative case fails there
with the tool's own error."""

from __future__ import annotations

import subprocess

import pytest
from apps import wsgi_app

FETCH = """
fetch(process.argv[1]).then(
  async (answer) => console.log(await answer.text()),
  (error) => { console.log("ERROR " + (error.cause && error.cause.code)); process.exitCode = 3; },
);
"""
# devtls_https options -> (curl's exit code, its message; Node's error code).
CASES = {
    "expired": ({"expired": True}, 60, "certificate has expired", "CERT_HAS_EXPIRED"),
    "hostname": ({"names": ("wrong.test",)}, 60, "no alternative certificate subject name",
                 "ERR_TLS_CERT_ALTNAME_INVALID"),
    "untrusted": ({"untrusted": True}, 60, "unable to get local issuer certificate",
                  "UNABLE_TO_VERIFY_LEAF_SIGNATURE"),
}  # fmt: skip


def run(*args):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_curl_and_node_verify(devtls_https, devtls_trust):
    server = devtls_https(wsgi_app)
    curl = run("curl", "-sS", "--http2", server.url + "/curl")
    assert curl.returncode == 0, curl.stderr
    assert '"path": "/curl"' in curl.stdout
    node = run("node", "-e", FETCH, server.url + "/node")
    assert node.returncode == 0, node.stdout + node.stderr
    assert '"path": "/node"' in node.stdout


@pytest.mark.parametrize("name", sorted(CASES))
def test_curl_and_node_refuse(devtls_https, devtls_trust, name):
    options, curl_code, curl_message, node_code = CASES[name]
    server = devtls_https(wsgi_app, **options)
    curl = run("curl", "-sS", server.url)
    assert curl.returncode == curl_code
    assert curl_message in curl.stderr
    node = run("node", "-e", FETCH, server.url)
    assert node.returncode == 3
    assert node.stdout.strip() == f"ERROR {node_code}"


def test_curl_mtls(devtls_https, devtls_trust, devtls_cert):
    server = devtls_https(wsgi_app, client_cert_required=True)
    files = devtls_cert("me.test", client=True).files()
    curl = run("curl", "-sS", "--cert", str(files.cert), "--key", str(files.key), server.url + "/m")
    assert curl.returncode == 0, curl.stderr
    refused = run("curl", "-sS", server.url)
    # TLS 1.3: the server's alert comes after curl sent its request, so curl reports it as a
    # failed receive (56) or, if the connection is gone by then, a failed send (55).
    assert refused.returncode in (55, 56), refused.stderr
    assert "TLS handshake failed: PEER_DID_NOT_RETURN_A_CERTIFICATE" in server.log
