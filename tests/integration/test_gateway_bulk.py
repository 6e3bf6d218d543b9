"""Bulk passthrough transfers move to a thread; stopping the sandbox mid-transfer still ends at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sealbox import Sandbox


def test_stop_during_bulk_transfer(run, testworld):
    network = testworld.sandbox_network()

    async def scenario():
        sandbox = await Sandbox.create("bulkstop", network=network)
        try:
            # 10 GiB takes far longer than the test: the transfer is in its thread when stop arrives.
            await sandbox.shell("nohup curl -sS -o /dev/null http://echo.test/bytes/10737418240 >/dev/null 2>&1 &")
            await asyncio.sleep(2)
            started = time.monotonic()
            await sandbox.stop()
            elapsed = time.monotonic() - started
            assert await sandbox.status() == "stopped"
            assert elapsed < 5, f"stop took {elapsed:.1f} s"
            log = (Path(sandbox.audit_path).parent / "supervisor.log").read_text()
            assert "Traceback" not in log
        finally:
            await sandbox.remove()

    run(scenario())
