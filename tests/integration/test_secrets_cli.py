"""Secrets through the ``sealbox`` command: --secret, --secret-file, spec errors and inspect.

Each test runs the installed ``sealbox`` script as a subprocess with the
suite's SEALBOX_HOME. github.com is mapped to the test world's git server
with --connect-to, the gateway trusts the test world's CA with
--upstream-ca, and every other name is denied. A value given as NAME@HOST is
read from the caller's environment, never from argv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sealbox.testworld.repogen import run_git
from sealbox.testworld.world import TestWorld

SEALBOX = str(Path(sys.executable).parent / "sealbox")
SPEC_ERROR = 125
LS_REMOTE = 'git ls-remote "https://x-access-token:$GITHUB_TOKEN@github.com/org/private.git" refs/heads/main'
CLI_VALUE = "cli-secret-value-" + "4b8e1f0a92" * 3


def sealbox(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SEALBOX, *args], env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=120)


def world_options(world: TestWorld) -> list[str]:
    """Return the options that reach only github.com, mapped to the git server, and trust the test world's CA."""
    return ["--connect-to", f"github.com:443:{world.git.addr}", "--upstream-ca", str(world.ca.cert_path),
            "--net-default-egress", "deny", "--net-rule", "allow@github.com"]


def server_main(world: TestWorld) -> str:
    return run_git(["rev-parse", "refs/heads/main"], cwd=world.repos["private"]).strip()


def test_run_secret_from_environment(testworld: TestWorld) -> None:
    script = f"echo $GITHUB_TOKEN; {LS_REMOTE}"

    result = sealbox("run", "--secret", "GITHUB_TOKEN@github.com", *world_options(testworld), "--",
                     "sh", "-c", script, env={"GITHUB_TOKEN": testworld.token})

    assert result.returncode == 0, result.stderr
    placeholder, remote = result.stdout.split("\n", 1)
    assert placeholder != testworld.token
    assert len(placeholder) == len(testworld.token)
    assert placeholder.startswith("ghp_")
    assert remote == f"{server_main(testworld)}\trefs/heads/main\n"
    assert testworld.token not in result.stdout + result.stderr


def test_run_secret_file(testworld: TestWorld, tmp_path: Path) -> None:
    secret_file = tmp_path / "secrets.txt"
    secret_file.write_text(f"# one secret per line\n\nDEPLOY_KEY={CLI_VALUE}@echo.test\n"
                           f"GITHUB_TOKEN={testworld.token}@github.com\n")
    script = f"echo $DEPLOY_KEY; {LS_REMOTE}"

    result = sealbox("run", "--secret-file", str(secret_file), *world_options(testworld), "--", "sh", "-c", script)

    assert result.returncode == 0, result.stderr
    placeholder, remote = result.stdout.split("\n", 1)
    assert placeholder.startswith("cli-")
    assert len(placeholder) == len(CLI_VALUE)
    assert placeholder != CLI_VALUE
    assert remote == f"{server_main(testworld)}\trefs/heads/main\n"
    assert testworld.token not in result.stdout + result.stderr


@pytest.mark.parametrize(("secrets", "message"), [
    (["SECRET_X@*.com"],
     "invalid host pattern '*.com': a wildcard needs at least two labels after '*.', as in '*.example.com'"),
    ([f"SECRET_X={CLI_VALUE}@"],
     "invalid secret allow_hosts 'SECRET_X': an empty host list would mean no host; list the hosts the secret is for"),
    ([f"SECRET_X={CLI_VALUE}@github.com", "SECRET_X@github.com"],
     "invalid secret name 'SECRET_X': duplicate; each secret needs its own environment variable name"),
], ids=["wildcard-tld", "empty-hosts", "duplicate-name"])
def test_invalid_secret_spec(secrets: list[str], message: str) -> None:
    options = [item for text in secrets for item in ("--secret", text)]

    result = sealbox("run", *options, "--", "true", env={"SECRET_X": CLI_VALUE})

    assert result.returncode == SPEC_ERROR
    assert result.stderr == f"sealbox: {message}\n"
    assert CLI_VALUE not in result.stdout + result.stderr


def test_inspect_names_without_value(testworld: TestWorld) -> None:
    name = "secrets-cli-inspect"
    created = sealbox("create", name, "--secret", "GITHUB_TOKEN@github.com", *world_options(testworld),
                      env={"GITHUB_TOKEN": testworld.token})
    try:
        assert created.returncode == 0, created.stderr

        result = sealbox("inspect", name)

        assert result.returncode == 0, result.stderr
        state = json.loads(result.stdout)
        placeholder = state["placeholders"]["GITHUB_TOKEN"]
        [secret] = state["spec"]["secrets"]
        assert (secret["name"], secret["allow_hosts"], secret["placeholder"]) == (
            "GITHUB_TOKEN", ["github.com"], placeholder)
        assert len(placeholder) == len(testworld.token)
        assert testworld.token not in result.stdout + result.stderr
    finally:
        removed = sealbox("rm", name)
        assert removed.returncode == 0, removed.stderr
