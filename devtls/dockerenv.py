"""What ``devtls env --docker`` prints: Dockerfile and compose lines that make an image trust
the root.

The root reaches the build as a BuildKit secret: a single file, mounted read-only for one
``RUN`` step, so neither the CA folder (which holds the key) nor the root itself is ever part
of the build context or of a layer of its own. That step puts the root in the image's own
anchors folder and runs the image's own trust update, so every runtime that reads the
system bundle trusts it; the ``ENV`` lines point the runtimes that do not (Node, requests) and
those that read a variable first (OpenSSL) at that bundle.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

MOUNT_ID = "devtls-root"
MOUNT_PATH = f"/run/secrets/{MOUNT_ID}"  # where BuildKit mounts it, read-only
ANCHOR_NAME = "devtls-root"


@dataclass(frozen=True)
class ImageFamily:
    title: str
    anchors: str  # the folder the image's trust update reads
    suffix: str
    update: str
    bundle: str  # the bundle it writes
    needs: str  # the package that brings the update command

    @property
    def anchor(self) -> str:
        return f"{self.anchors}/{ANCHOR_NAME}{self.suffix}"


FAMILIES = (
    ImageFamily(
        "Debian/Ubuntu images (debian, ubuntu, node, python, golang...)",
        "/usr/local/share/ca-certificates",
        ".crt",  # update-ca-certificates takes only .crt files from there
        "update-ca-certificates",
        "/etc/ssl/certs/ca-certificates.crt",
        "apt-get update && apt-get install -y --no-install-recommends ca-certificates",
    ),
    ImageFamily(
        "Alpine images (alpine, *-alpine)",
        "/usr/local/share/ca-certificates",
        ".crt",
        "update-ca-certificates",
        "/etc/ssl/certs/ca-certificates.crt",
        "apk add --no-cache ca-certificates",
    ),
    ImageFamily(
        "RHEL-family images (fedora, centos, rockylinux, almalinux, ubi)",
        "/etc/pki/ca-trust/source/anchors",
        ".pem",
        "update-ca-trust extract",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "dnf install -y ca-certificates",
    ),
)


def dockerfile_lines(family: ImageFamily) -> list[str]:
    """The Dockerfile lines for one family: the trust step, then the runtime variables."""
    return [
        f"RUN --mount=type=secret,id={MOUNT_ID},required=true \\",
        f"    cp {MOUNT_PATH} {family.anchor} && {family.update}",
        f"ENV NODE_EXTRA_CA_CERTS={family.anchor} \\",
        f"    SSL_CERT_FILE={family.bundle} \\",
        f"    REQUESTS_CA_BUNDLE={family.bundle}",
    ]


def secret_flag(root: Path) -> str:
    """``--secret id=...,src=ROOT`` for a shell: Docker reads the value as one CSV record
    (buildx's parseSecret), so a path with a comma or a quote is a quoted CSV field."""
    source = f"src={root}"
    if any(c in source for c in ',"\r\n'):
        source = '"' + source.replace('"', '""') + '"'
    return f"--secret {shlex.quote(f'id={MOUNT_ID},{source}')}"


def _shown(root: Path) -> str:
    """The path as a comment can hold it: one line, escaped as JSON if it holds controls."""
    text = str(root)
    return text if text.isprintable() else json.dumps(text)


def docker_lines(root: Path, fingerprint: str) -> list[str]:
    """Everything ``devtls env --docker`` prints, for the root certificate file ``root``."""
    lines = [
        "# Make a container image trust the devtls root (the root only: never rootCA-key.pem).",
        f"# root: {_shown(root)}",
        f"# SHA-256: {fingerprint}",
        "# The root is a build secret: mounted read-only for one RUN step, in no layer of its own.",
    ]
    for family in FAMILIES:
        lines += [
            "",
            f"# --- Dockerfile, {family.title}: after FROM, as root",
            f"# (the image needs {family.update.split()[0]}: RUN {family.needs})",
            *dockerfile_lines(family),
        ]
    lines += [
        "",
        "# --- build: pass the root as the secret",
        f"docker build {secret_flag(root)} .",
        "",
        "# --- or compose.yaml: the same secret for the service's build",
        "services:",
        "  app:",
        "    build:",
        "      context: .",
        f"      secrets: [{MOUNT_ID}]",
        "secrets:",
        f"  {MOUNT_ID}:",
        f"    file: {json.dumps(str(root))}",
    ]
    return lines
