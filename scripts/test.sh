#!/usr/bin/env bash
# The README's test command: installs the test dependencies (Debian tools the tests talk to,
# a venv with the test extras), then runs the code gates and the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(mkcert openssl curl ca-certificates libnss3-tools chromium openjdk-17-jre-headless
    ca-certificates-java nodejs pebble postgresql nghttp2-client)
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

[[ -x .venv/bin/python ]] || python3 -m venv .venv
py=.venv/bin/python
"$py" -m pip install -q --disable-pip-version-check -e '.[test]'

"$py" -m ruff check devtls tests scripts
"$py" -m ruff format --check devtls tests scripts
"$py" -m mypy
"$py" -m pytest --cov=devtls --cov-report=term "$@"
if (($# == 0)); then
    # The forwarder runs on uvloop where it is installed; its tests run again on asyncio's loop.
    DEVTLS_EVENT_LOOP=asyncio "$py" -m pytest -q tests/proxy/test_forwarding.py \
        tests/proxy/test_hostile.py tests/proxy/test_tcp.py tests/proxy/test_integrity.py \
        tests/proxy/test_tls_limits.py tests/proxy/test_h2.py
fi
