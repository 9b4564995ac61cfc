"""`devtls env --docker`: the printed Debian lines run for real in a throwaway Debian root file
system (mmdebstrap, chroot), the Alpine and RHEL lines as recorded."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtls.ca import LocalCA
from devtls.dockerenv import MOUNT_PATH
from tests.conftest import IN_CI, require_tool, wait_for
from tests.routerprocess import router
from tests.truststores.conftest import devtls

# One mmdebstrap (about a minute, network to the Debian mirror) per session; bounded.
MMDEBSTRAP_TIMEOUT = 900
PACKAGES = "ca-certificates,openssl,curl"


def printed(ca: LocalCA) -> str:
    result = devtls("env", "--docker", env={"CAROOT": str(ca.path)})
    assert result.returncode == 0, result.stderr
    return result.stdout


def section(output: str, title: str) -> list[str]:
    """The lines under the ``# --- Dockerfile, TITLE`` comment, up to the next blank line."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# --- Dockerfile, {title}"))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return [line for line in lines[start:end] if not line.startswith("#")]


def parse(lines: list[str]) -> tuple[str, str, dict[str, str]]:
    """A family's lines as (the secret's mount target, the RUN step's shell command, ENV)."""
    text = "\n".join(lines).replace("\\\n", " ")
    run_line = next(line for line in text.splitlines() if line.startswith("RUN "))
    env_line = next(line for line in text.splitlines() if line.startswith("ENV "))
    mount, command = run_line.removeprefix("RUN ").split(" ", 1)
    options = dict(o.split("=", 1) for o in mount.removeprefix("--mount=").split(","))
    assert options["type"] == "secret"
    target = options.get("target", f"/run/secrets/{options['id']}")
    variables = dict(pair.split("=", 1) for pair in shlex.split(env_line.removeprefix("ENV ")))
    return target, command.strip(), variables


def test_the_output_names_the_root_only(fresh_ca: LocalCA) -> None:
    output = printed(fresh_ca)
    assert str(fresh_ca.path / "rootCA.pem") in output
    assert fresh_ca.fingerprint_sha256 in output
    assert "PRIVATE KEY" not in output
    # The key file is named only in the warning never to copy it.
    assert [line for line in output.splitlines() if "rootCA-key.pem" in line] == [
        "# Make a container image trust the devtls root (the root only: never rootCA-key.pem)."
    ]
    assert f"docker build --secret id=devtls-root,src={fresh_ca.path / 'rootCA.pem'} ." in output
    assert f'    file: "{fresh_ca.path / "rootCA.pem"}"' in output


def test_alpine_and_rhel_lines(fresh_ca: LocalCA) -> None:
    output = printed(fresh_ca)
    assert section(output, "Alpine") == [
        "RUN --mount=type=secret,id=devtls-root,required=true \\",
        "    cp /run/secrets/devtls-root /usr/local/share/ca-certificates/devtls-root.crt"
        " && update-ca-certificates",
        "ENV NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/devtls-root.crt \\",
        "    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\",
        "    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
    ]
    assert "RUN apk add --no-cache ca-certificates" in output
    assert section(output, "RHEL") == [
        "RUN --mount=type=secret,id=devtls-root,required=true \\",
        "    cp /run/secrets/devtls-root /etc/pki/ca-trust/source/anchors/devtls-root.pem"
        " && update-ca-trust extract",
        "ENV NODE_EXTRA_CA_CERTS=/etc/pki/ca-trust/source/anchors/devtls-root.pem \\",
        "    SSL_CERT_FILE=/etc/pki/tls/certs/ca-bundle.crt \\",
        "    REQUESTS_CA_BUNDLE=/etc/pki/tls/certs/ca-bundle.crt",
    ]


def test_docker_and_shell_together_is_bad_usage(fresh_ca: LocalCA) -> None:
    result = devtls("env", "--docker", "--shell", "bash", env={"CAROOT": str(fresh_ca.path)})
    assert result.returncode == 2
    assert "--shell and --docker" in result.stderr


# -- Debian for real: mmdebstrap and chroot ---------------------------------------------------


def require_root() -> None:
    if os.geteuid() != 0:
        message = "needs root (mmdebstrap, mount and chroot)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def host_suite() -> str:
    try:
        release = Path("/etc/os-release").read_text()
    except OSError:
        return "stable"
    match = re.search(r"^VERSION_CODENAME=(\w+)$", release, re.M)
    return match.group(1) if match and "ID=debian" in release else "stable"


@pytest.fixture(scope="session")
def debian_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Debian's essential packages, apt, ca-certificates, openssl and curl, once per session."""
    require_root()
    mmdebstrap = require_tool("mmdebstrap")
    target = tmp_path_factory.mktemp("debian") / "root"
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    mirror = [str(sources)] if sources.is_file() else []
    started = time.monotonic()
    result = subprocess.run(
        [mmdebstrap, "--quiet", "--variant=apt", f"--include={PACKAGES}", host_suite(),
         str(target), *mirror],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=MMDEBSTRAP_TIMEOUT,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    print(f"mmdebstrap took {time.monotonic() - started:.0f} s")
    return target


@pytest.fixture
def root_mounted(debian_root: Path, fresh_ca: LocalCA) -> Iterator[Path]:
    """The root bind-mounted read-only where the printed RUN step reads it."""
    target = debian_root / MOUNT_PATH.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch()
    source = fresh_ca.path / "rootCA.pem"
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True, timeout=30)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True, timeout=30)
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True, timeout=30)
        target.unlink()


def in_chroot(
    root: Path, command: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    variables = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", **(env or {})}
    return subprocess.run(
        ["chroot", str(root), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in variables.items()),
         "/bin/sh", "-c", command],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.root
@pytest.mark.tool("mmdebstrap")
def test_debian_lines_make_curl_and_openssl_trust_the_root_in_a_debian_chroot(
    fresh_ca: LocalCA, debian_root: Path, root_mounted: Path, tmp_path: Path
) -> None:
    mount_target, command, variables = parse(section(printed(fresh_ca), "Debian"))
    assert mount_target == MOUNT_PATH
    assert set(variables) == {"NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"}
    # The mount is read-only inside the chroot.
    assert in_chroot(debian_root, f"echo x > {mount_target}").returncode != 0

    with router(caroot=fresh_ca.path, cwd=tmp_path, route_lines=0) as served:
        assert wait_for(lambda: served.has_line("demo page"), 30), served.lines
        port = served.port
        curl = (
            f"curl -sS --max-time 20 --resolve localhost:{port}:127.0.0.1 https://localhost:{port}/"
        )
        openssl = (
            f"openssl s_client -connect 127.0.0.1:{port} -servername localhost"
            " -verify_hostname localhost -verify_return_error </dev/null"
        )
        # Negative control: the image does not trust the root before the step.
        assert in_chroot(debian_root, curl, variables).returncode == 60
        assert in_chroot(debian_root, openssl, variables).returncode != 0

        step = in_chroot(debian_root, command)
        assert step.returncode == 0, step.stdout + step.stderr
        assert "1 added" in step.stdout

        fetched = in_chroot(debian_root, curl, variables)
        assert fetched.returncode == 0, fetched.stderr
        assert "HTTPS works" in fetched.stdout
        verified = in_chroot(debian_root, openssl, variables)
        assert verified.returncode == 0, verified.stdout[-1000:] + verified.stderr[-1000:]
        assert "Verify return code: 0 (ok)" in verified.stdout
    # The variables name files of the image that hold the root (Node reads the first).
    node_file = debian_root / variables["NODE_EXTRA_CA_CERTS"].lstrip("/")
    assert node_file.read_bytes().strip() == fresh_ca.cert_pem().strip()
    bundle = debian_root / variables["SSL_CERT_FILE"].lstrip("/")
    assert fresh_ca.cert_pem().strip() in bundle.read_bytes()
    assert variables["REQUESTS_CA_BUNDLE"] == variables["SSL_CERT_FILE"]
