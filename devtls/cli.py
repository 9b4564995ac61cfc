"""The command line: parse, call the library, report. No logic lives here.

Heavy modules (cryptography, the proxy) are imported inside the commands so that
``devtls --help`` and ``devtls caroot`` start fast.
"""

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer

from devtls import __version__
from devtls.errors import DevtlsError

app = typer.Typer(
    name="devtls",
    help="Real HTTPS and WSS for local development: a local CA, trust stores, a TLS forwarder.",
    add_completion=False,
    no_args_is_help=True,
    # Tracebacks with locals could print key material.
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)

F = TypeVar("F", bound=Callable[..., None])


def reports_errors(command: F) -> F:
    """Turn a DevtlsError into one line on stderr and its exit status."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        try:
            command(*args, **kwargs)
        except DevtlsError as exc:
            typer.echo(f"devtls: error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"devtls {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Real HTTPS and WSS for local development."""
    logging.basicConfig(format="devtls: warning: %(message)s", level=logging.WARNING)


@app.command()
@reports_errors
def caroot() -> None:
    """Print the CA folder ($CAROOT, else the devtls user data folder)."""
    from devtls.ca import resolve_caroot

    typer.echo(str(resolve_caroot()))


@app.command()
@reports_errors
def cert(
    names: Annotated[
        Optional[list[str]],  # noqa: UP045 - typer reads this annotation at run time
        typer.Argument(
            help="DNS names (wildcards allowed), IPs, emails or URIs.", show_default=False
        ),
    ] = None,
    ecdsa: Annotated[
        bool, typer.Option("--ecdsa", help="ECDSA P-256 key instead of RSA 2048.")
    ] = False,
    client: Annotated[
        bool, typer.Option("--client", help="A client-authentication certificate.")
    ] = False,
    pkcs12: Annotated[
        bool,
        typer.Option(
            "--pkcs12", help="Write one PKCS#12 file (password 'changeit') instead of PEM."
        ),
    ] = False,
    pkcs12_legacy: Annotated[
        bool,
        typer.Option(
            "--pkcs12-legacy",
            help="Like --pkcs12, in the old 3DES/SHA-1 encoding for old Windows and Java.",
        ),
    ] = False,
    csr: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--csr", help="Sign this CSR; the names come from it.", metavar="FILE"),
    ] = None,
    cert_file: Annotated[Optional[Path], typer.Option("--cert-file", metavar="FILE")] = None,  # noqa: UP045
    key_file: Annotated[Optional[Path], typer.Option("--key-file", metavar="FILE")] = None,  # noqa: UP045
    p12_file: Annotated[Optional[Path], typer.Option("--p12-file", metavar="FILE")] = None,  # noqa: UP045
    days: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--days", help="Validity in days (default and maximum: 825).", metavar="N"),
    ] = None,
) -> None:
    """Issue a certificate for NAMEs, signed by the local CA (created if missing)."""
    from devtls.issue import CertRequest, make_cert_files

    result = make_cert_files(
        CertRequest(
            names=tuple(names or ()),
            key_type="ecdsa" if ecdsa else "rsa",
            client=client,
            pkcs12=pkcs12,
            pkcs12_legacy=pkcs12_legacy,
            csr_file=csr,
            cert_file=cert_file,
            key_file=key_file,
            p12_file=p12_file,
            days=days,
        )
    )
    if result.ca_created:
        typer.echo(
            f"Created a new local CA in {result.ca.path} (not trusted yet: run 'devtls install')",
            err=True,
        )
    for warning in result.warnings:
        typer.echo(f"devtls: note: {warning}", err=True)
    typer.echo("Created a certificate valid for:")
    for name in result.leaf.names:
        typer.echo(f"  - {name}")
    for path in result.files:
        typer.echo(f"Wrote {path}")
    typer.echo(f"It is valid until {result.leaf.not_after:%Y-%m-%d %H:%M} UTC.")


def main() -> None:
    """Console entry point."""
    try:
        app()
    except BrokenPipeError:  # pragma: no cover - e.g. `devtls caroot | head -c1`
        sys.exit(1)
