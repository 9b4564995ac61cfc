"""Certificates from an ACME CA (RFC 8555) for ``devtls serve --acme``, renewed in the background.

The protocol work (JWS, nonces, orders) is certbot's ``acme`` library; its calls block, so they
run in worker threads and the event loop keeps answering challenges meanwhile: http-01 on the
plain-HTTP listener, tls-alpn-01 (RFC 8737) on the TLS port itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devtls import _files
from devtls.config import AcmeSettings
from devtls.errors import ConfigError, DevtlsError
from devtls.issue import generate_leaf_key, server_context_from_pem

log = logging.getLogger("devtls")
T = TypeVar("T")

ACME_TLS_ALPN = b"acme-tls/1"
# RFC 8737 3: the critical extension that carries the key authorization digest.
ID_PE_ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
# Attempts for one ACME request before giving up on the order (Pebble rejects 5% of nonces
# on purpose, Let's Encrypt now and then; the library retries a bad nonce only once).
REQUEST_ATTEMPTS = 4
ORDER_TIMEOUT = dt.timedelta(seconds=90)
# After a failed renewal: wait this long, doubling up to a day, with jitter.
FIRST_BACKOFF = 60.0
MAX_BACKOFF = 24 * 3600.0


# When stopping, requests still running in their threads get this long to end before the
# session they use is closed (a request that outlives it would leave its socket unclosed).
STOP_GRACE_SECONDS = 2.0
_running: set[threading.Thread] = set()


async def in_daemon_thread(func: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread`` on a daemon thread of its own.

    An ACME request can block for long (an order is polled for up to ORDER_TIMEOUT). In the
    loop's default executor it would hold up the exit after a stop: the executor, and then the
    interpreter, wait for its threads. Cancelled, the caller stops waiting at once, and the
    thread's late result is dropped.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # cancelled meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = func(*args), None
        except BaseException as exc:  # handed to the caller, as to_thread does
            result, error = None, exc
        finally:
            _running.discard(thread)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    thread = threading.Thread(target=work, name="devtls-acme", daemon=True)
    _running.add(thread)
    thread.start()
    return await future


async def wait_for_threads(timeout: float) -> None:
    """Let the requests still running end (bounded), without blocking the loop."""
    deadline = time.monotonic() + timeout
    while _running and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


@functools.cache  # registered once: parsed challenges must be instances of these classes
def _register_tls_alpn() -> tuple[type[Any], type[Any]]:
    """tls-alpn-01 through the library's own extension points (it no longer ships one)."""
    from acme import challenges

    @challenges.ChallengeResponse.register
    class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
        typ = "tls-alpn-01"

    @challenges.Challenge.register
    class TLSALPN01(challenges.KeyAuthorizationChallenge):
        response_cls = TLSALPN01Response
        typ = response_cls.typ

        def validation(self, account_key: Any, **unused: Any) -> str:
            return str(self.key_authorization(account_key))

    return TLSALPN01, TLSALPN01Response


class AcmeManager:
    """Holds one certificate per allowed host; orders, caches and renews them."""

    def __init__(
        self,
        settings: AcmeSettings,
        *,
        verify: str | bool = True,
        write_log: Callable[[str], None] = print,
        alpn: tuple[str, ...] = ("http/1.1",),
    ) -> None:
        self.settings = settings
        # What the TLS port offers with the certificates ordered (ServeConfig.offered_alpn).
        self.alpn = alpn
        self.verify = verify
        self.write_log = write_log
        self.contexts: dict[str, ssl.SSLContext] = {}
        self.lifetimes: dict[str, tuple[dt.datetime, dt.datetime]] = {}
        self.http_tokens: dict[str, bytes] = {}
        self.alpn_contexts: dict[str, ssl.SSLContext] = {}
        self.orders = 0
        self.ready = asyncio.Event()
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self.cache = settings.cache or _default_cache(settings.directory)

    # -- what the TLS and HTTP sides ask ---------------------------------------------------

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None:
        # Names are compared without regard to case (RFC 4343): keys are lower case.
        name = server_name or self.settings.hosts[0]
        return self.contexts.get(name.lower())

    def http01_answer(self, path: str) -> bytes | None:
        prefix = "/.well-known/acme-challenge/"
        return self.http_tokens.get(path[len(prefix) :]) if path.startswith(prefix) else None

    def alpn_challenge(
        self, server_name: str | None, alpn: tuple[bytes, ...]
    ) -> ssl.SSLContext | None:
        if ACME_TLS_ALPN in alpn and server_name is not None:
            return self.alpn_contexts.get(server_name.lower())
        return None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Account first (a ToS problem stops the server), then certificates in the background."""
        _files.ensure_private_dir(self.cache)
        await in_daemon_thread(self._open_account)
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # stopping anyway
                await self._task
        await wait_for_threads(STOP_GRACE_SECONDS)
        if self._client is not None:
            self._client.net.session.close()

    async def _run(self) -> None:
        for host in self.settings.hosts:
            self._load_cached(host)
        backoff = FIRST_BACKOFF
        while True:
            failed = False
            for host in self.settings.hosts:
                if self._due(host):
                    failed |= not await self._obtain_with_retries(host)
            self.ready.set()
            if failed:
                # The old certificate (if any) stays in service; try again after a pause
                # that grows, never in a tight loop and never as late as the next check.
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))  # noqa: S311
                backoff = min(backoff * 2, MAX_BACKOFF)
            else:
                backoff = FIRST_BACKOFF
                await asyncio.sleep(self.settings.check_interval)

    def _due(self, host: str) -> bool:
        lifetime = self.lifetimes.get(host)
        if lifetime is None:
            return True
        start, end = lifetime
        renew_at = start + (end - start) * self.settings.renew_fraction
        return dt.datetime.now(dt.timezone.utc) >= renew_at

    # -- account ----------------------------------------------------------------------------

    def _open_account(self) -> None:
        from acme import client
        from josepy import jwa, jwk

        _register_tls_alpn()
        key_file = self.cache / "account-key.pem"
        if key_file.exists():
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            _files.write_atomic(
                key_file,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                _files.SECRET_MODE,
            )
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        account_jwk = jwk.JWKEC(key=key)
        net = client.ClientNetwork(account_jwk, alg=jwa.ES256, user_agent="devtls")
        # requests takes a CA bundle path where the library expects a bool; the bundle holds
        # the OS roots and the devtls root (so a local test CA such as Pebble's is trusted).
        net.verify_ssl = self.verify  # type: ignore[assignment]
        try:
            self._client = self._account(net)
        except BaseException:
            net.session.close()  # its pooled connection would otherwise linger
            raise
        self._jwk = account_jwk

    def _account(self, net: Any) -> Any:
        """The directory, the terms check, and the account (cached, else registered now)."""
        from acme import client, errors, messages

        try:
            directory = self._retry(
                lambda: client.ClientV2.get_directory(self.settings.directory, net), "directory"
            )
        except OSError as exc:
            raise self._unreachable(exc) from None
        terms = directory.meta.terms_of_service
        if not self.settings.agree_tos:
            raise ConfigError(
                f"the ACME CA asks you to agree to its terms: {terms or '(no URL given)'}",
                "read them, then add --acme-agree-tos",
            )
        acme = client.ClientV2(directory, net)
        account_file = self.cache / "account.json"
        if account_file.exists():
            net.account = messages.RegistrationResource.json_loads(account_file.read_bytes())
        else:
            new = messages.NewRegistration.from_data(
                email=self.settings.email, terms_of_service_agreed=True
            )
            try:
                regr = self._retry(lambda: acme.new_account(new), "account")
            except errors.ConflictError as exc:  # the key has an account already
                regr = acme.query_registration(messages.RegistrationResource(uri=exc.location))
            net.account = regr
            _files.write_atomic(account_file, regr.json_dumps().encode(), _files.SECRET_MODE)
        return acme

    def _unreachable(self, exc: OSError) -> DevtlsError:
        """One line for a directory that cannot be fetched, saying which roots were used."""
        directory = self.settings.directory
        if _verify_failed(exc):
            roots = (
                f"the roots in {self.settings.ca_root}"
                if self.settings.ca_root is not None
                else "the OS roots and the devtls root"
            )
            return DevtlsError(
                f"the ACME directory {directory} has a TLS certificate that does not verify "
                f"with {roots}",
                "for a private ACME CA (step-ca, Pebble, another devtls) give its root with "
                "--acme-ca-root FILE",
            )
        return DevtlsError(
            f"cannot reach the ACME directory {directory}: {_reason(exc)}",
            "check --acme-directory and that the ACME server runs",
        )

    def _retry(self, call: Callable[[], T], what: str) -> T:
        from acme import messages

        for attempt in range(REQUEST_ATTEMPTS):
            try:
                return call()
            except messages.Error as exc:
                if exc.code != "badNonce" or attempt == REQUEST_ATTEMPTS - 1:
                    raise
            except OSError:  # connection trouble: requests' errors derive from OSError
                if attempt == REQUEST_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    # -- certificates -----------------------------------------------------------------------

    def _files_of(self, host: str) -> tuple[Path, Path]:
        return self.cache / f"{host}.pem", self.cache / f"{host}-key.pem"

    def _load_cached(self, host: str) -> bool:
        chain_file, key_file = self._files_of(host)
        try:
            chain, key = chain_file.read_bytes(), key_file.read_bytes()
            self._install(host, chain, key)
        except (OSError, ValueError, ssl.SSLError):
            return False
        end = self.lifetimes[host][1]
        if dt.datetime.now(dt.timezone.utc) >= end:
            return False
        self.write_log(
            f"acme: using the cached certificate for {host} (valid until {end:%Y-%m-%d})"
        )
        return True

    def _install(self, host: str, chain: bytes, key: bytes) -> None:
        leaf = x509.load_pem_x509_certificates(chain)[0]
        context = server_context_from_pem(chain, key)
        if self.alpn:
            context.set_alpn_protocols(list(self.alpn))
        self.contexts[host.lower()] = context
        self.lifetimes[host] = (leaf.not_valid_before_utc, leaf.not_valid_after_utc)

    async def _obtain_with_retries(self, host: str) -> bool:
        for attempt in range(3):
            try:
                await self._obtain(host)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.write_log(f"acme: ordering a certificate for {host} failed: {describe(exc)}")
                if attempt < 2:
                    await asyncio.sleep(2 + attempt * 3)
        return False

    async def _obtain(self, host: str) -> None:
        from acme import challenges, crypto_util

        self.write_log(f"acme: ordering a certificate for {host} ({self.settings.challenge})")
        self.orders += 1
        key = generate_leaf_key(self.settings.key_type)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        csr_pem = crypto_util.make_csr(key_pem, [host])
        acme = self._client
        order = await in_daemon_thread(self._retry, lambda: acme.new_order(csr_pem), "order")
        tls_alpn, _ = _register_tls_alpn()
        wanted = challenges.HTTP01 if self.settings.challenge == "http-01" else tls_alpn
        answered: list[tuple[str, str]] = []
        try:
            for authz in order.authorizations:
                if authz.body.status.name == "valid":
                    continue
                challenge = next(
                    (c for c in authz.body.challenges if isinstance(c.chall, wanted)), None
                )
                if challenge is None:
                    raise DevtlsError(f"the CA offers no {self.settings.challenge} challenge")
                response, validation = challenge.response_and_validation(self._jwk)
                name = authz.body.identifier.value.lower()
                if wanted is challenges.HTTP01:
                    token = challenge.chall.encode("token")
                    self.http_tokens[token] = validation.encode()
                    answered.append(("http", token))
                else:
                    self.alpn_contexts[name] = _alpn_context(name, validation)
                    answered.append(("alpn", name))
                await in_daemon_thread(
                    self._retry,
                    lambda c=challenge, r=response: acme.answer_challenge(c, r),
                    "answer",
                )
            deadline = dt.datetime.now() + ORDER_TIMEOUT
            done = await in_daemon_thread(
                self._retry, lambda: acme.poll_and_finalize(order, deadline), "finalize"
            )
        finally:
            for kind, value in answered:
                (self.http_tokens if kind == "http" else self.alpn_contexts).pop(value, None)
        chain = done.fullchain_pem.encode()
        chain_file, key_file = self._files_of(host)
        _files.write_atomic(key_file, key_pem, _files.SECRET_MODE)
        _files.write_atomic(chain_file, chain, _files.SECRET_MODE)
        self._install(host, chain, key_pem)
        _, end = self.lifetimes[host]
        self.write_log(f"acme: got a certificate for {host} (valid until {end:%Y-%m-%d})")


def _alpn_context(name: str, key_authorization: str) -> ssl.SSLContext:
    """The self-signed certificate RFC 8737 asks for, offered only with ALPN acme-tls/1."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode()).digest()
    now = dt.datetime.now(dt.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        # DER OCTET STRING of the 32-byte digest.
        .add_extension(
            x509.UnrecognizedExtension(ID_PE_ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    context = server_context_from_pem(cert.public_bytes(serialization.Encoding.PEM), key_pem)
    context.set_alpn_protocols([ACME_TLS_ALPN.decode()])
    return context


def describe(exc: BaseException) -> str:
    """One line: which challenge failed and what the CA said."""
    from acme import errors, messages

    if isinstance(exc, errors.ValidationError):
        for authzr in exc.failed_authzrs:
            for challenge in authzr.body.challenges:
                if challenge.error is not None:
                    detail = challenge.error.detail or challenge.error.code
                    return f"{challenge.chall.typ} challenge failed: {detail}"
        return "validation failed"
    if isinstance(exc, messages.Error):
        return f"the CA said: {exc.detail or exc.code}"
    if isinstance(exc, errors.TimeoutError):
        return "the order did not complete in time"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


def _default_cache(directory: str) -> Path:
    import platformdirs

    # One folder per ACME directory: staging and production accounts never mix.
    slug = hashlib.sha256(directory.encode()).hexdigest()[:12]
    return Path(platformdirs.user_cache_dir("devtls", appauthor=False)) / "acme" / slug


def check_installed() -> None:
    """Raise DevtlsError if the ``acme`` extra is missing, so ``serve --acme`` fails at start.

    The library is imported only in worker threads once the server is up; without this check
    a missing package was a traceback after the listeners had opened.
    """
    try:
        import acme.challenges
        import acme.client
        import acme.crypto_util
        import acme.errors
        import acme.messages  # noqa: F401
        import josepy  # noqa: F401
    except ImportError as exc:
        missing = (exc.name or "acme").partition(".")[0]
        raise DevtlsError(
            f"--acme needs the {missing!r} package, which is not installed",
            "run: pip install 'devtls[acme]'",
        ) from None


def _verify_failed(exc: BaseException) -> bool:
    """Whether a requests error comes from certificate verification (its causes and args)."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 16:  # the chain is short; the bound is for a cyclic one
        current = todo.pop()
        seen.append(current)
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        todo += [a for a in current.args if isinstance(a, BaseException)]
        for nested in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(nested, BaseException) and nested not in seen:
                todo.append(nested)
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
