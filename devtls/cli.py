"""The command line: parse, call the library, report. No logic lives here.

Heavy modules (cryptography, the proxy) are imported inside the commands so that
``devtls --help`` and ``devtls caroot`` start fast.
"""

import functools
import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from devtls import __version__
from devtls.errors import DevtlsError

if TYPE_CHECKING:
    from devtls.hosts import HostsChange
    from devtls.trust import StoreOutcome

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
        from devtls.corebuild import core_description

        typer.echo(f"devtls {__version__} (core: {core_description()})")
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
        list[str] | None,
        typer.Argument(
            help="DNS names (wildcards allowed), IPs, emails or URIs.",
            show_default=False,
            metavar="NAME...",
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
        Path | None,
        typer.Option("--csr", help="Sign this CSR; the names come from it.", metavar="FILE"),
    ] = None,
    cert_file: Annotated[
        Path | None,
        typer.Option("--cert-file", metavar="FILE", help="Where to write the certificate."),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option("--key-file", metavar="FILE", help="Where to write the key (0600)."),
    ] = None,
    p12_file: Annotated[
        Path | None,
        typer.Option("--p12-file", metavar="FILE", help="Where to write the PKCS#12 file (0600)."),
    ] = None,
    days: Annotated[
        int | None,
        typer.Option("--days", help="Validity in days (default and maximum: 825).", metavar="N"),
    ] = None,
) -> None:
    """Issue a certificate for NAMEs, signed by the local CA (created if missing)."""
    from devtls.certfiles import CertRequest, make_cert_files

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


StoreOption = Annotated[
    list[str] | None,
    typer.Option(
        "--store", metavar="NAME", help="system, nss or java (repeatable). (default: all)"
    ),
]


def _report(outcomes: list["StoreOutcome"], *, fail: bool = True) -> None:
    for outcome in outcomes:
        line = f"{outcome.store}: {outcome.action}" + (
            f" ({outcome.detail})" if outcome.detail else ""
        )
        if outcome.failed:
            typer.echo(f"devtls: error: {line}", err=True)
            continue
        typer.echo(line)
        if outcome.action == "would run":
            for step in outcome.steps:
                typer.echo(f"  {step}")
        for note in outcome.notes:
            typer.echo(f"devtls: note: {note}", err=True)
    if fail and any(o.failed for o in outcomes):
        raise typer.Exit(1)


@app.command()
@reports_errors
def install(
    store: StoreOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the exact commands and changes only.")
    ] = False,
    constrain: Annotated[
        str | None,
        typer.Option(
            "--constrain",
            metavar="NAME,...",
            help="Create the new CA limited to these names and CIDR ranges "
            "(e.g. localhost,.localhost,.test,127.0.0.0/8,::1/128); only when no CA exists.",
        ),
    ] = None,
) -> None:
    """Create the CA if missing and make the OS, browsers (NSS) and Java trust it."""
    from devtls import trust
    from devtls.constraints import parse_constraints

    constraints = parse_constraints(constrain) if constrain is not None else None
    ca, created, outcomes = trust.install(
        tuple(store or ()), dry_run=dry_run, constraints=constraints
    )
    if created:
        verb = "would create" if dry_run else "created"
        limited = f", limited to {constraints}" if constraints is not None else ""
        typer.echo(f"{verb} a new local CA in {ca.path}{limited}")
    _report(outcomes)


@app.command()
@reports_errors
def uninstall(
    store: StoreOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the exact commands and changes only.")
    ] = False,
    old: Annotated[
        bool,
        typer.Option(
            "--old",
            help="Remove the roots 'devtls ca rotate' replaced (and their kept files) instead.",
        ),
    ] = False,
) -> None:
    """Remove the root from the trust stores (the CA files stay)."""
    if not old:
        from devtls import trust

        _report(trust.uninstall(tuple(store or ()), dry_run=dry_run))
        return
    from devtls.rotate import uninstall_old

    retired = uninstall_old(tuple(store or ()), dry_run=dry_run)
    if not retired:
        typer.echo("no old roots to remove")
    outcomes = []
    for entry in retired:
        typer.echo(f"{entry.archive.name}:")
        outcomes += entry.outcomes
        _report(entry.outcomes, fail=False)
        if entry.deleted:
            typer.echo(f"deleted {entry.archive}")
    if any(o.failed for o in outcomes):
        raise typer.Exit(1)


ca_app = typer.Typer(
    help="The local CA's lifecycle: replace its root.", no_args_is_help=True, add_completion=False
)
app.add_typer(ca_app, name="ca")


@ca_app.command("rotate")
@reports_errors
def ca_rotate() -> None:
    """Replace the root; trust moves to it; the old one stays until 'uninstall --old'."""
    from devtls.rotate import rotate

    done = rotate()
    assert done.old.cert_path is not None
    typer.echo(
        f"rotated the root in {done.new.path}: the new one (SHA-256 {done.new.fingerprint_sha256}, "
        f"valid until {done.new.not_after:%Y-%m-%d}) is rootCA.pem; the old one is kept as "
        f"{done.old.cert_path.name}"
    )
    for outcome in done.outcomes:
        typer.echo(
            f"{outcome.store}: {outcome.action} the new root; the old one stays trusted until "
            "'devtls uninstall --old'"
        )
    for outcome in done.untouched:
        typer.echo(f"{outcome.store}: not changed ({outcome.detail})")
    typer.echo("New leaves come from the new root; a running 'devtls serve' switches by itself.")


@app.command()
@reports_errors
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """The CA and, for each trust store, whether it trusts the CA."""
    import json

    from devtls import trust

    report = trust.status()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"CA:          {report['caroot']}")
    typer.echo(f"subject:     {report['subject']}")
    typer.echo(f"SHA-256:     {report['fingerprint_sha256']}")
    typer.echo(f"expires:     {report['not_after']}")
    if report["expiry_warning"]:
        typer.echo(
            f"devtls: warning: the root {report['expiry_warning']}; run 'devtls ca rotate'",
            err=True,
        )
    limits = report["name_constraints"]
    typer.echo(f"names:       {', '.join(limits) if limits else 'any (no name constraints)'}")
    if report["old_roots"]:
        typer.echo(
            f"old roots:   {', '.join(report['old_roots'])} (trusted until "
            "'devtls uninstall --old')"
        )
    for name, entry in report["stores"].items():
        typer.echo(f"{name + ':':12} {entry['state']} ({entry['detail']})")


@app.command()
@reports_errors
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Check the CA, trust stores, browser profiles, runtimes, names and served certificates."""
    import json

    from devtls import doctor as checks

    report = checks.run(checks.context_from_environment())
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for line in report.lines():
            typer.echo(line)
    raise typer.Exit(report.exit_code)


@app.command()
@reports_errors
def env(
    shell: Annotated[
        str | None,
        typer.Option("--shell", metavar="bash|zsh|fish|powershell", help="(default: from $SHELL)"),
    ] = None,
    docker: Annotated[
        bool,
        typer.Option(
            "--docker",
            help="Print the Dockerfile / compose lines that make an image trust the root instead.",
        ),
    ] = False,
) -> None:
    """Print the lines that make Node, Python, curl trust the CA: eval "$(devtls env)"."""
    from devtls import trust
    from devtls.errors import UsageError

    if docker and shell is not None:
        raise UsageError("--shell and --docker do not go together", "use one of them")
    for line in trust.docker_env_lines() if docker else trust.env_lines(shell):
        typer.echo(line)


def _serve_signature() -> inspect.Signature:
    """The serve command's parameters, made from the one declaration of its settings."""
    from devtls.serve_settings import SETTINGS

    types: dict[str, Any] = {
        "text": str,
        "path": Path,
        "switch": bool,
        "count": int,
        "many": list[str],
    }
    parameters = []
    for setting in SETTINGS:
        if setting.flag is None and setting.field != "upstream":
            continue  # only in devtls.toml
        info: typer.models.ParameterInfo
        if setting.flag is None:
            info = typer.Argument(help=setting.help, show_default=False, metavar=setting.metavar)
        else:
            info = typer.Option(
                setting.flag, metavar=setting.metavar, help=setting.help_text, show_default=False
            )
        annotation = Annotated[types[setting.kind] | None, info]  # type: ignore[valid-type,name-defined]
        parameters.append(
            inspect.Parameter(
                setting.field,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=None,
                annotation=annotation,
            )
        )
    return inspect.Signature(parameters, return_annotation=None)


def _serve(**given: object) -> None:
    """Forward https/wss to a local http/ws app, with certificates from the local CA."""
    from devtls.config import ServeOptions, build_config
    from devtls.proxy.workers import serve_forever

    options = ServeOptions(**given)
    raise typer.Exit(serve_forever(build_config(options), options))


_serve.__signature__ = _serve_signature()  # type: ignore[attr-defined]
serve = app.command(name="serve")(reports_errors(_serve))


@app.command()
@reports_errors
def routes(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """List the routes of the running router, with whether each upstream answers."""
    import json

    from devtls.control_client import format_routes, list_routes

    listing = list_routes()
    if as_json:
        listing.pop("v", None)
        listing.pop("ok", None)
        typer.echo(json.dumps(listing, indent=2))
        return
    for line in format_routes(listing):
        typer.echo(line)


route_app = typer.Typer(
    help="Change the routes of the running router.", no_args_is_help=True, add_completion=False
)
app.add_typer(route_app, name="route")


@route_app.command("add")
@reports_errors
def route_add(
    target: Annotated[str, typer.Argument(metavar="HOST[/PATH]", help="e.g. api.localhost/v1")],
    upstream: Annotated[
        str, typer.Argument(metavar="UPSTREAM", help="3000, host:port, http(s)://URL or unix:PATH")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a route another process holds.")
    ] = False,
) -> None:
    """Add (or replace) a route of the running router; it stays until removed or restart."""
    from devtls.control_client import add_route

    answer = add_route(target, upstream, force=force)
    typer.echo(f"added {answer['route']} -> {answer['upstream']}")


@route_app.command("rm")
@reports_errors
def route_rm(
    target: Annotated[str, typer.Argument(metavar="HOST[/PATH]", help="as given to route add")],
) -> None:
    """Remove a route added with 'devtls route add' (or by 'devtls run')."""
    from devtls.control_client import remove_route

    answer = remove_route(target)
    typer.echo(f"removed {answer['route']}")


@app.command(
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
    no_args_is_help=True,
)
@reports_errors
def run(
    command: Annotated[
        list[str],
        typer.Argument(
            metavar="-- CMD [ARGS...]", help="The dev server's command.", show_default=False
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            metavar="NAME",
            help="Serve it as NAME.localhost. (default: package.json's name, else the folder's)",
        ),
    ] = None,
    no_inject: Annotated[
        bool,
        typer.Option(
            "--no-inject", help="Do not add the port flags of dev servers that ignore PORT."
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Take NAME over from the process that serves it.")
    ] = False,
) -> None:
    """Run a dev server behind the router as https://NAME.localhost, until it exits."""
    from devtls.devrun import RunRequest
    from devtls.devrun import run as run_dev_server

    request = RunRequest(tuple(command), name=name, inject=not no_inject, force=force)
    raise typer.Exit(run_dev_server(request))


@app.command()
@reports_errors
def stop() -> None:
    """Stop the running router (requests in flight finish first)."""
    from devtls.control_client import stop_router

    typer.echo(f"stopped the router (pid {stop_router()})")


hosts_app = typer.Typer(
    help="Name the route hosts in the hosts file, for tools that do not resolve *.localhost.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(hosts_app, name="hosts")

HostsDryRun = Annotated[
    bool, typer.Option("--dry-run", help="Print the change to the hosts file only.")
]


def _print_hosts_change(change: "HostsChange", dry_run: bool) -> None:
    from devtls.hosts import report
    from devtls.hostsfile import skipped_note

    if change.skipped:
        typer.echo(f"devtls: note: {skipped_note(change.skipped)}", err=True)
    for line in report(change, dry_run=dry_run):
        typer.echo(line)


@hosts_app.command("sync")
@reports_errors
def hosts_sync(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Name these hosts instead of the running router's route hosts.",
            show_default=False,
            metavar="[NAME]...",
        ),
    ] = None,
    dry_run: HostsDryRun = False,
) -> None:
    """Write one marked block in the hosts file naming the route hosts on 127.0.0.1."""
    from devtls import hosts

    _print_hosts_change(hosts.sync(tuple(names or ()), dry_run=dry_run), dry_run)


@hosts_app.command("clean")
@reports_errors
def hosts_clean(dry_run: HostsDryRun = False) -> None:
    """Remove the block 'devtls hosts sync' wrote, and nothing else."""
    from devtls import hosts

    _print_hosts_change(hosts.clean(dry_run=dry_run), dry_run)


@app.command(name="acme-server")
@reports_errors
def acme_server(
    listen: Annotated[
        str | None,
        typer.Option("--listen", metavar="ADDR", help="Where to listen (default 127.0.0.1:14000)."),
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            metavar="NAME",
            help="Names it issues for, repeatable, replacing the default list: a name, '*.suffix',"
            " an IP or a network (default: localhost, *.localhost, *.test, *.internal,"
            " 127.0.0.0/8, ::1).",
            show_default=False,
        ),
    ] = None,
    days: Annotated[
        int | None,
        typer.Option("--days", metavar="N", help="Validity of the certificates (default 7)."),
    ] = None,
) -> None:
    """An ACME server (RFC 8555) issuing from the local CA, for certbot, lego, Caddy, Traefik."""
    from devtls.acmeserver.server import AcmeServerSettings, check_installed, run

    check_installed()
    raise typer.Exit(run(AcmeServerSettings.build(listen, allow, days)))


def main() -> None:
    """Console entry point."""
    try:
        app()
    except BrokenPipeError:  # pragma: no cover - e.g. `devtls caroot | head -c1`
        sys.exit(1)
