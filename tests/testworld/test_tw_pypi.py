"""Tests of the package index behind token Basic auth."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from sealbox.testworld import TestWorld


def test_index_refuses_without_token(world: TestWorld, curl) -> None:
    result = curl("-o", "/dev/null", "-w", "%{http_code}", f"https://{world.pypi.addr}/simple/sealbox-probe/")
    assert result.stdout == b"401"


def test_index_refuses_wrong_token(world: TestWorld, curl) -> None:
    result = curl("-o", "/dev/null", "-w", "%{http_code}", "-u", "__token__:pypi-wrong",
                  f"https://{world.pypi.addr}/simple/")
    assert result.stdout == b"401"


def test_index_lists_project(world: TestWorld, curl) -> None:
    result = curl("--fail", "-u", f"__token__:{world.token}", f"https://{world.pypi.addr}/simple/")
    assert b'<a href="/simple/sealbox-probe/">sealbox-probe</a>' in result.stdout


def test_index_lists_wheel(world: TestWorld, curl) -> None:
    result = curl("--fail", "-u", f"__token__:{world.token}", f"https://{world.pypi.addr}/simple/sealbox-probe/")
    package = world.packages[0]
    assert f"{package.filename}#sha256={package.sha256}".encode() in result.stdout


def test_index_by_name(world: TestWorld, curl) -> None:
    result = curl("--fail", "-u", f"__token__:{world.token}", "--connect-to", f"pypi.test:443:{world.pypi.addr}",
                  "https://pypi.test/simple/")
    assert b"sealbox-probe" in result.stdout


def test_pip_downloads_wheel(world: TestWorld, run_client, tmp_path: Path) -> None:
    result = run_client(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest", str(tmp_path),
         "--index-url", world.pypi_index_url(with_token=True), "sealbox-probe==1.0"]
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    package = world.packages[0]
    downloaded = tmp_path / package.filename
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == package.sha256
