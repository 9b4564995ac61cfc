"""`devtls cert` against `mkcert` as whole processes, in one run, as ratios.

Usage: python scripts/bench/cert_bench.py [--runs 20]
Needs hyperfine and mkcert (Debian packages of the same names); both use one shared CA.
It also times the start-up floor: the interpreter, then the imports `devtls cert` needs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

NAMES = ["localhost", "127.0.0.1", "::1"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    for tool in ("hyperfine", "mkcert"):
        if not shutil.which(tool):
            print(f"{tool} is missing: apt-get install {tool}", file=sys.stderr)
            return 1
    devtls = shutil.which("devtls") or str(Path(sys.executable).parent / "devtls")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        env = {**os.environ, "CAROOT": str(workdir / "ca")}
        # Python must be allowed to cache compiled modules, as it does on a user's machine;
        # the warm-up runs write the caches of an editable install.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        # mkcert makes the CA (RSA 3072); both tools then load the very same files.
        subprocess.run(["mkcert", "warmup.test"], cwd=workdir, env=env, check=True,
                       capture_output=True)  # fmt: skip
        results = {}
        for label, flag in (("RSA", ""), ("ECDSA", "-ecdsa")):
            names = " ".join(f"'{n}'" for n in NAMES)
            commands = {
                "mkcert": f"mkcert {flag} {names}",
                "devtls": f"{devtls} cert {'--ecdsa' if flag else ''} {names}",
            }
            export = workdir / f"{label}.json"
            subprocess.run(
                ["hyperfine", "-N", "--warmup", "3", "--runs", str(args.runs),
                 "--export-json", str(export), "--style", "none",
                 *[c for c in commands.values()]],
                cwd=workdir, env=env, check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            data = json.loads(export.read_text())["results"]
            results[label] = {name: data[i]["median"] for i, name in enumerate(commands)}
        floor = start_up_floor(workdir, env, args.runs)
    print(f"{'key':6} {'mkcert ms':>10} {'devtls ms':>10} {'devtls/mkcert':>14}")
    for label, medians in results.items():
        ratio = medians["devtls"] / medians["mkcert"]
        print(
            f"{label:6} {medians['mkcert'] * 1000:10.1f} {medians['devtls'] * 1000:10.1f} "
            f"{ratio:13.2f}x"
        )
    print("\nWhat any Python CLI pays before its own work (median ms):")
    for what, seconds in floor.items():
        print(f"  {what:32} {seconds * 1000:6.1f}")
    return 0


def start_up_floor(workdir: Path, env: dict[str, str], runs: int) -> dict[str, float]:
    """Interpreter start, and the imports devtls cert cannot do without, as whole processes."""
    python = sys.executable
    steps = {
        "python -c pass": "pass",
        "+ import cryptography.x509": "import cryptography.x509",
        "+ import typer": "import cryptography.x509, typer",
        "+ import devtls.cli, devtls.issue": "import devtls.cli, devtls.issue",
    }
    export = workdir / "floor.json"
    subprocess.run(
        ["hyperfine", "-N", "--warmup", "3", "--runs", str(runs), "--export-json", str(export),
         "--style", "none", *[f"{python} -c '{code}'" for code in steps.values()]],
        cwd=workdir, env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    data = json.loads(export.read_text())["results"]
    return {what: data[i]["median"] for i, what in enumerate(steps)}


if __name__ == "__main__":
    sys.exit(main())
