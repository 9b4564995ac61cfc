"""devtls run without processes: its names, the dev servers' flags, the child's environment."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from devtls.devrun import child_env, exit_status, merged_bundle, project_name, url_of
from devtls.devrun_inject import (
    WEBPACK_SOCKET_URL,
    app_name,
    check_name,
    inject,
    package_name,
    sanitize_label,
)
from devtls.errors import UsageError
from tests.conftest import require_tool, run

# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("My App_2", "my-app-2"),
        ("--web--", "web"),
        ("Ünïcode", "n-code"),
        ("x" * 80, "x" * 63),
        ("___", None),
        ("", None),
    ],
)
def test_any_text_becomes_one_dns_label(text: str, label: str | None) -> None:
    assert sanitize_label(text) == label


@pytest.mark.parametrize(
    ("given", "name"),
    [("Shop", "shop"), ("api.shop", "api.shop"), ("shop.localhost", "shop"), ("a-1.b", "a-1.b")],
)
def test_a_given_name_is_checked_and_lower_cased(given: str, name: str) -> None:
    assert check_name(given) == name


@pytest.mark.parametrize("given", ["", "-x", "a..b", "a_b", "x" * 64, "localhost", "a b", "ü"])
def test_a_given_name_that_is_no_host_name_is_refused(given: str) -> None:
    with pytest.raises(UsageError, match="is not a host name"):
        check_name(given)


def test_package_json_name_drops_the_npm_scope() -> None:
    assert package_name(json.dumps({"name": "@acme/Web-App"})) == "web-app"
    assert package_name(json.dumps({"name": "plain"})) == "plain"
    assert package_name(json.dumps({"name": 3})) is None
    assert package_name("{not json") is None
    assert package_name("[]") is None


def test_the_name_comes_from_the_flag_then_package_json_then_the_folder() -> None:
    package = json.dumps({"name": "@x/shop"})
    assert app_name("given", package, "folder") == "given"
    assert app_name(None, package, "folder") == "shop"
    assert app_name(None, json.dumps({"name": "@@@"}), "My Folder") == "my-folder"
    assert app_name(None, None, "My Folder") == "my-folder"
    assert app_name(None, None, "___") == "app"
    assert app_name(None, None, "shop", branch="feature/Login") == "feature-login.shop"


def _git(cwd: Path, *args: str) -> None:
    run("git", "-c", "user.name=t", "-c", "user.email=t@t.test", *args, cwd=cwd)


def test_a_linked_git_worktree_puts_its_branch_in_front(tmp_path: Path) -> None:
    require_tool("git")
    main = tmp_path / "shop"
    main.mkdir()
    (main / "package.json").write_text(json.dumps({"name": "@acme/shop"}))
    _git(main, "init", "-q", "-b", "main")
    _git(main, "add", "package.json")
    _git(main, "commit", "-q", "-m", "one")
    _git(main, "worktree", "add", "-q", "-b", "fix/Header", str(tmp_path / "other"))
    assert project_name(main, None) == "shop"
    assert project_name(tmp_path / "other", None) == "fix-header.shop"
    assert project_name(tmp_path / "other", "given") == "fix-header.given"
    # A detached HEAD has no branch name to give.
    _git(tmp_path / "other", "checkout", "-q", "--detach")
    assert project_name(tmp_path / "other", None) == "shop"


def test_outside_git_the_folder_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "Plain Folder"
    folder.mkdir()
    assert project_name(folder, None) == "plain-folder"


# -- the dev servers' flags -----------------------------------------------------------------------

VITE = ["--port", "4000", "--strictPort", "--host", "127.0.0.1"]
PLAIN = ["--port", "4000", "--host", "127.0.0.1"]
WEBPACK = [*PLAIN, "--client-web-socket-url", WEBPACK_SOCKET_URL]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["vite"], ["vite", *VITE]),
        (["vite", "dev", "--open"], ["vite", "dev", "--open", *VITE]),
        (["./node_modules/.bin/vite"], ["./node_modules/.bin/vite", *VITE]),
        (["npx", "vite"], ["npx", "vite", *VITE]),
        (["npx", "--yes", "vite"], ["npx", "--yes", "vite", *VITE]),
        (["pnpm", "exec", "vite"], ["pnpm", "exec", "vite", *VITE]),
        (["astro", "dev"], ["astro", "dev", *PLAIN]),
        (["ng", "serve"], ["ng", "serve", *PLAIN]),
        (["npx", "ng", "s"], ["npx", "ng", "s", *PLAIN]),
        (["webpack", "serve"], ["webpack", "serve", *WEBPACK]),
        (["webpack-dev-server"], ["webpack-dev-server", *WEBPACK]),
        (["uvicorn", "app:app", "--reload"], ["uvicorn", "app:app", "--reload", *PLAIN]),
        (["python3", "-m", "uvicorn", "a:b"], ["python3", "-m", "uvicorn", "a:b", *PLAIN]),
        (["flask", "run"], ["flask", "run", *PLAIN]),
        # The user's --host stays; only the port is added.
        (["vite", "--host", "0.0.0.0"], ["vite", "--host", "0.0.0.0", "--port", "4000",
                                          "--strictPort"]),
    ],
)  # fmt: skip
def test_dev_servers_that_ignore_port_get_their_flags(argv: list[str], expected: list[str]) -> None:
    injection = inject(argv, 4000)
    assert injection is not None
    assert injection.argv == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["vite", "--port", "3000"],
        ["vite", "--port=3000"],
        ["vite", "build"],
        ["vite", "--debug", "build"],
        ["astro", "build"],
        ["ng", "build"],
        ["webpack"],
        ["next", "dev"],  # reads PORT itself
        ["python3", "server.py"],
        ["npx"],
        [],
    ],
)
def test_nothing_is_added_to_other_commands(argv: list[str]) -> None:
    assert inject(argv, 4000) is None


def package(**scripts: str) -> str:
    return json.dumps({"name": "x", "scripts": scripts})


@pytest.mark.parametrize(
    ("argv", "scripts", "expected"),
    [
        (["npm", "run", "dev"], {"dev": "vite"}, ["npm", "run", "dev", "--", *VITE]),
        (["npm", "start"], {"start": "vite"}, ["npm", "start", "--", *VITE]),
        (["npm", "run", "dev", "--", "--open"], {"dev": "vite"},
         ["npm", "run", "dev", "--", "--open", *VITE]),
        (["pnpm", "dev"], {"dev": "astro dev"}, ["pnpm", "dev", *PLAIN]),
        (["yarn", "dev"], {"dev": "webpack serve --mode development"}, ["yarn", "dev", *WEBPACK]),
        (["bun", "run", "dev"], {"dev": "cross-env NODE_ENV=dev vite"},
         ["bun", "run", "dev", *VITE]),
    ],
)  # fmt: skip
def test_package_json_scripts_are_read_to_see_what_they_run(
    argv: list[str], scripts: dict[str, str], expected: list[str]
) -> None:
    injection = inject(argv, 4000, package(**scripts))
    assert injection is not None
    assert injection.argv == expected


@pytest.mark.parametrize(
    ("argv", "scripts"),
    [
        (["npm", "run", "dev"], {"dev": "vite --port 5000"}),
        (["npm", "run", "dev"], {"dev": "tsc && vite"}),
        (["npm", "run", "dev"], {"dev": "next dev"}),
        (["npm", "run", "other"], {"dev": "vite"}),
        (["npm", "test"], {"test": "vite"}),
        (["npm", "run", "dev"], {"dev": "vite 'unclosed"}),
    ],
)
def test_scripts_that_are_not_one_dev_server_are_left_alone(
    argv: list[str], scripts: dict[str, str]
) -> None:
    assert inject(argv, 4000, package(**scripts)) is None
    assert inject(argv, 4000, None) is None


# -- the child's environment, its status ---------------------------------------------------------


def test_the_child_gets_port_host_url_and_the_ca_variables(tmp_path: Path) -> None:
    ours = {"NODE_EXTRA_CA_CERTS": "/ca/rootCA.pem", "SSL_CERT_FILE": "/ca/bundle.pem"}
    env = child_env({"KEEP": "1"}, 4000, "https://x.localhost:8443/", ours, b"ROOT\n")
    assert env == {
        "KEEP": "1",
        "PORT": "4000",
        "HOST": "127.0.0.1",
        "DEVTLS_URL": "https://x.localhost:8443/",
        **ours,
    }


def test_a_ca_file_the_user_set_is_kept_with_the_root_added(
    tmp_path: Path, runtime_dir: Path
) -> None:
    theirs = tmp_path / "corporate.pem"
    theirs.write_bytes(b"CORPORATE\n")
    ours = {"NODE_EXTRA_CA_CERTS": "/ca/rootCA.pem"}
    env = child_env({"NODE_EXTRA_CA_CERTS": str(theirs)}, 1, "u", ours, b"ROOT\n")
    merged = Path(env["NODE_EXTRA_CA_CERTS"])
    assert merged.read_bytes() == b"CORPORATE\nROOT\n"
    assert merged.parent == runtime_dir / "devtls"
    # The same content is the same file; a file holding the root already is used as it is.
    assert merged_bundle(theirs, b"ROOT\n", merged.parent) == merged
    assert merged_bundle(merged, b"ROOT\n", merged.parent) == merged
    # A variable naming a file that is not there gets ours.
    env = child_env({"NODE_EXTRA_CA_CERTS": str(tmp_path / "gone")}, 1, "u", ours, b"ROOT\n")
    assert env["NODE_EXTRA_CA_CERTS"] == "/ca/rootCA.pem"


def test_exit_status_is_the_childs_or_128_plus_its_signal() -> None:
    assert exit_status(0) == 0
    assert exit_status(3) == 3
    assert exit_status(-signal.SIGTERM) == 143
    assert exit_status(-signal.SIGINT) == 130


def test_the_url_names_the_routers_port_unless_443() -> None:
    assert url_of("x.localhost", 8443) == "https://x.localhost:8443/"
    assert url_of("x.localhost", 443) == "https://x.localhost/"


def test_the_readme_table_is_the_injection_table() -> None:
    from devtls.devrun_inject import INJECTIONS

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for server in INJECTIONS:
        flags = " ".join(server.flags).format(port="P", host="127.0.0.1")
        assert f"| `{flags}` |" in readme, server.name


def test_a_bad_name_is_a_usage_error_before_anything_starts(runtime_dir: Path) -> None:
    from typer.testing import CliRunner

    from devtls.cli import app

    result = CliRunner().invoke(app, ["run", "--name", "bad_name", "--", "true"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "devtls: error: --name 'bad_name' is not a host name; use letters, digits and hyphens, "
        "in labels joined by dots (e.g. --name shop or --name api.shop)"
    ]
    assert not (runtime_dir / "devtls").exists()  # no router was started
