"""The sandbox specification: what `Sandbox.create` and `sealbox create` ask for.

A SandboxSpec is a frozen value, validated when it is built, and round-trips
through JSON for the registry. Secret values are never part of that JSON: the
registry stores names, hosts and placeholders only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from sealbox.errors import InvalidSpecError
from sealbox.spec.network import Network
from sealbox.spec.secret import Secret, validate_secrets
from sealbox.spec.units import parse_cpus, parse_memory

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_USER = re.compile(r"([0-9]+|[a-z_][a-z0-9_-]*)(:([0-9]+|[a-z_][a-z0-9_-]*))?")

RUNTIMES = ("runc", "gvisor")
DEFAULT_PIDS = 1024
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Volume:
    """A host directory or file bind-mounted into the sandbox."""

    source: str
    destination: str
    read_only: bool = False

    @classmethod
    def parse(cls, text: str) -> Volume:
        """Parse the CLI form SRC:DST[:ro|:rw]."""
        parts = text.split(":")
        read_only = False
        if len(parts) == 3 and parts[2] in ("ro", "rw"):
            read_only = parts[2] == "ro"
            parts = parts[:2]
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise InvalidSpecError("volume", text, "expected SRC:DST or SRC:DST:ro")
        return cls(parts[0], parts[1], read_only).validated()

    def validated(self) -> Volume:
        if not self.source.startswith("/"):
            raise InvalidSpecError("volume source", self.source, "must be an absolute host path")
        if not self.destination.startswith("/") or "/../" in self.destination + "/":
            raise InvalidSpecError("volume destination", self.destination, "must be an absolute path without '..'")
        if self.destination.rstrip("/") in ("", "/proc", "/sys", "/dev"):
            raise InvalidSpecError("volume destination", self.destination, "cannot replace a system mount")
        return self


@dataclass(frozen=True)
class SandboxSpec:
    """Everything needed to start one sandbox."""

    name: str
    image: str = "host"
    memory_bytes: int | None = None
    cpus: float | None = None
    pids: int = DEFAULT_PIDS
    user: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = "/"
    hostname: str | None = None
    volumes: tuple[Volume, ...] = ()
    detached: bool = False
    runtime: str = "runc"
    network: Network = field(default_factory=Network.public_only)
    secrets: tuple[Secret, ...] = ()
    upstream_ca: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.name):
            raise InvalidSpecError(
                "name", self.name, "use 1-63 characters from a-z, 0-9, '_', '.', '-', starting with a letter or digit"
            )
        if self.runtime not in RUNTIMES:
            raise InvalidSpecError("runtime", self.runtime, f"expected one of {', '.join(RUNTIMES)}")
        if self.pids < 16:
            raise InvalidSpecError("pids", self.pids, "must be at least 16")
        if self.runtime == "gvisor" and self.pids < 1024:
            raise InvalidSpecError("pids", self.pids, "gVisor needs a pids limit of at least 1024")
        if self.user is not None and not _USER.fullmatch(self.user):
            raise InvalidSpecError("user", self.user, "expected UID[:GID] or NAME[:GROUP]")
        for key, value in self.env.items():
            if not _ENV_NAME.fullmatch(key):
                raise InvalidSpecError("env", key, "environment variable names are [A-Za-z_][A-Za-z0-9_]*")
            if "\0" in value:
                raise InvalidSpecError("env", key, "values cannot contain NUL")
        if not self.workdir.startswith("/"):
            raise InvalidSpecError("workdir", self.workdir, "must be an absolute path")
        if self.hostname is not None and not _HOSTNAME.fullmatch(self.hostname):
            raise InvalidSpecError("hostname", self.hostname, "expected a DNS label of 1-63 letters, digits and '-'")
        destinations = [volume.destination.rstrip("/") for volume in self.volumes]
        if len(set(destinations)) != len(destinations):
            raise InvalidSpecError("volumes", destinations, "two volumes have the same destination")
        validate_secrets(self.secrets)
        secret_names = {secret.name for secret in self.secrets}
        clashing = secret_names & set(self.env)
        if clashing:
            raise InvalidSpecError("env", sorted(clashing)[0], "is also the name of a secret")

    @classmethod
    def build(
        cls,
        name: str,
        *,
        image: str = "host",
        memory: int | float | str | None = None,
        cpus: int | float | str | None = None,
        pids: int = DEFAULT_PIDS,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str = "/",
        hostname: str | None = None,
        volumes: Mapping[str, str] | Sequence[Volume | str] | None = None,
        detached: bool = False,
        runtime: str = "runc",
        network: Network | None = None,
        secrets: Sequence[Secret] = (),
        upstream_ca: Sequence[str] = (),
    ) -> SandboxSpec:
        """Build a spec from the loosely typed arguments of the public API."""
        return cls(
            name=name,
            image=image,
            memory_bytes=None if memory is None else parse_memory(memory),
            cpus=None if cpus is None else parse_cpus(cpus),
            pids=pids,
            user=user,
            env=dict(env or {}),
            workdir=workdir,
            hostname=hostname,
            volumes=_volumes(volumes),
            detached=detached,
            runtime=runtime,
            network=network if network is not None else Network.public_only(),
            secrets=tuple(secrets),
            upstream_ca=tuple(upstream_ca),
        )

    def with_name(self, name: str) -> SandboxSpec:
        return replace(self, name=name)

    def to_json(self) -> dict[str, Any]:
        """Serialize for the registry; secret values are left out."""
        return {
            "name": self.name,
            "image": self.image,
            "memory_bytes": self.memory_bytes,
            "cpus": self.cpus,
            "pids": self.pids,
            "user": self.user,
            "env": dict(self.env),
            "workdir": self.workdir,
            "hostname": self.hostname,
            "volumes": [[v.source, v.destination, v.read_only] for v in self.volumes],
            "detached": self.detached,
            "runtime": self.runtime,
            "network": self.network.to_json(),
            "secrets": [secret.to_json(include_value=False) for secret in self.secrets],
            "upstream_ca": list(self.upstream_ca),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SandboxSpec:
        return cls(
            name=data["name"],
            image=data["image"],
            memory_bytes=data["memory_bytes"],
            cpus=data["cpus"],
            pids=data["pids"],
            user=data["user"],
            env=dict(data["env"]),
            workdir=data["workdir"],
            hostname=data["hostname"],
            volumes=tuple(Volume(s, d, bool(ro)) for s, d, ro in data["volumes"]),
            detached=data["detached"],
            runtime=data["runtime"],
            network=Network.from_json(data["network"]),
            secrets=tuple(Secret.from_json(item) for item in data["secrets"]),
            upstream_ca=tuple(data["upstream_ca"]),
        )


def _volumes(volumes: Mapping[str, str] | Sequence[Volume | str] | None) -> tuple[Volume, ...]:
    """Accept {"/dst": "/host/src"} (microsandbox's order), Volume objects or "SRC:DST[:ro]" strings."""
    if not volumes:
        return ()
    if isinstance(volumes, Mapping):
        return tuple(Volume(source, destination).validated() for destination, source in volumes.items())
    result = []
    for item in volumes:
        result.append(item.validated() if isinstance(item, Volume) else Volume.parse(item))
    return tuple(result)
