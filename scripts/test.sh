#!/usr/bin/env bash
# The README's test command: installs the test dependencies (Debian tools the tests talk to,
# a venv with the test extras), then runs the code gates and the whole test suite twice: on
# the sans-IO core compiled with mypyc, then on the same source as pure Python.
# Extra arguments go to pytest (both runs).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(mkcert openssl curl ca-certificates libnss3-tools chromium openjdk-17-jre-headless
    ca-certificates-java nodejs pebble postgresql nghttp2-client wget firefox-esr mmdebstrap
    iproute2 util-linux # serve --lan's tests: network namespaces, veth pairs, unshare --uts
    certbot lego caddy # the ACME clients acme-server is tested with
    zsh fish # devtls env's lines are run by each shell they are written for
    gcc libc6-dev python3-dev) # a C compiler and Python's headers build the compiled core
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    as_root=()
    [[ $(id -u) -eq 0 ]] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
fi

# The dev servers the browser tests put devtls in front of (Vite, webpack-dev-server, Next.js), pinned
# in tests/devservers/package-lock.json and installed there when missing or when the lock
# changed. Debian's nodejs package ships no npm (its npm package does); Vite needs Node
# 20.19 or later.
devservers=tests/devservers
if ! command -v npm >/dev/null; then
    as_root=()
    [[ $(id -u) -eq 0 ]] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq \
        --no-install-recommends npm >/dev/null
fi
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number);
    process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
    echo "test.sh: Node $(node --version) is older than the dev servers need (20.19):" \
        "install Node 20.19 or later (nodejs.org or NodeSource)" >&2
    [[ ${CI:-} == true ]] && exit 1
elif [[ ! -f $devservers/node_modules/.package-lock.json ||
    $devservers/package-lock.json -nt $devservers/node_modules/.package-lock.json ]]; then
    npm ci --prefix "$devservers" --no-audit --no-fund --loglevel=error
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
py=.venv/bin/python
# With a C compiler, the editable install compiles the core (setup.py) into the source tree:
# extension modules next to their .py files, which Python imports first.
"$py" -m pip install -q --disable-pip-version-check -e '.[test]'
# sslyze, the TLS scanner tests/proxy/test_tls_scanner.py runs, pins a cryptography older than
# devtls's, so it has a venv of its own.
scanner=.venv-sslyze
[[ -x $scanner/bin/sslyze ]] || python3 -m venv "$scanner"
"$scanner/bin/python" -m pip install -q --disable-pip-version-check 'sslyze==6.3.1'
# They are removed before the pure run and whatever happens, so the tree is left pure: an
# edited .py file is never shadowed by an old build of it. `pip install -e .` builds them again.
ext_suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
remove_compiled_core() { find devtls -name "*$ext_suffix" -delete; }
trap remove_compiled_core EXIT

"$py" -m ruff check setup.py devtls tests scripts
"$py" -m ruff format --check setup.py devtls tests scripts
"$py" -m mypy

core=$("$py" -c 'from devtls.corebuild import core_build; print(core_build())')
if [[ $core == compiled ]]; then
    echo "== the suite on the compiled core (mypyc)"
    # tests/test_corebuild.py fails unless the compiled core is the one loaded.
    DEVTLS_EXPECT_CORE=compiled "$py" -m pytest "$@"
    if (($# == 0)); then
        # The forwarder runs on uvloop where it is installed; its tests run again on asyncio's loop.
        DEVTLS_EXPECT_CORE=compiled DEVTLS_EVENT_LOOP=asyncio "$py" -m pytest -q \
            tests/proxy/test_forwarding.py tests/proxy/test_hostile.py tests/proxy/test_tcp.py \
            tests/proxy/test_integrity.py tests/proxy/test_tls_limits.py \
            tests/proxy/test_h2.py tests/proxy/test_h2_hostile.py
    fi
elif [[ ${CI:-} == true ]]; then
    echo "test.sh: the compiled core was not built ('pip install -v -e .' says why)" >&2
    exit 1
else
    echo "test.sh: note: no compiled core was built here ('pip install -v -e .' says why):" \
        "the suite runs on the pure-Python core only" >&2
fi

remove_compiled_core
echo "== the suite on the pure-Python core"
DEVTLS_EXPECT_CORE=pure "$py" -m pytest --cov=devtls --cov-report=term "$@"
