"""Secret values never show in a detached supervisor's process data or in sealbox's state files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

INLINE_VALUE = "sk-InlineValueThatMustNotLeak0123"
ENVIRON_VALUE = "ghp_EnvironValueThatMustNotLeak4567890"


def _sealbox(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sealbox.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_values_absent_from_process_and_state(sealbox_home):
    env = {**os.environ, "ENV_TOKEN": ENVIRON_VALUE}
    created = _sealbox("create", "exposure", "--secret", "ENV_TOKEN@github.com",
                       "--secret", f"INLINE_TOKEN={INLINE_VALUE}@api.example.com", env=env)
    try:
        assert created.returncode == 0, created.stderr
        inspected = json.loads(_sealbox("inspect", "exposure", env=env).stdout)
        pid = inspected["supervisor_pid"]

        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert cmdline.rstrip(b"\0") == b"sealbox supervisor exposure"
        for value in (INLINE_VALUE, ENVIRON_VALUE):
            assert value.encode() not in cmdline
            assert value.encode() not in environ
            assert value not in json.dumps(inspected)

        for path in sealbox_home.rglob("*"):
            if path.is_file() and "/rootfs/" not in str(path):
                data = path.read_bytes()
                assert INLINE_VALUE.encode() not in data, path
                assert ENVIRON_VALUE.encode() not in data, path
    finally:
        removed = _sealbox("rm", "exposure", env=env)
        assert removed.returncode == 0, removed.stderr
