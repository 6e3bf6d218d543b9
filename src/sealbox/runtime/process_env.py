"""The process settings shared by the container's config and every exec.

The supervisor writes them to `process.json` in the sandbox's state directory
once the sandbox runs; exec reads them back. They hold placeholders, never
secret values.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sealbox.spec.sandbox import DEFAULT_PATH

PROCESS_FILE = "process.json"


@dataclass(frozen=True)
class ProcessSettings:
    container_id: str
    runtime: str
    user: str            # "UID:GID"
    workdir: str
    env: dict[str, str]

    def save(self, state_dir: Path) -> None:
        temporary = state_dir / (PROCESS_FILE + ".tmp")
        temporary.write_text(json.dumps(asdict(self)))
        temporary.rename(state_dir / PROCESS_FILE)

    @classmethod
    def load(cls, state_dir: Path) -> ProcessSettings:
        return cls(**json.loads((state_dir / PROCESS_FILE).read_text()))


def base_environment(*, home: str, hostname: str, placeholders: dict[str, str], ca_env: dict[str, str],
                     user_env: dict[str, str]) -> dict[str, str]:
    """Return the environment every process in the sandbox starts with; later sources win."""
    env = {"PATH": DEFAULT_PATH, "HOME": home, "HOSTNAME": hostname, "LANG": "C.UTF-8"}
    env.update(ca_env)
    env.update(placeholders)
    env.update(user_env)
    return env
