"""Validation and JSON round trip of the sandbox spec, and the OCI config built from it."""

from __future__ import annotations

import json

import pytest

from sealbox.errors import InvalidSpecError
from sealbox.runtime.bundle import CAPABILITIES, BundleInputs, build_config
from sealbox.runtime.seccomp import DENIED_SYSCALLS
from sealbox.spec.network import Network
from sealbox.spec.sandbox import SandboxSpec, Volume
from sealbox.spec.secret import Secret

INPUTS = BundleInputs(rootfs="/r", netns_path="/proc/1/fd/3", cgroup_path="/sealbox/x", init_binary="/usr/bin/catatonit",
                      uid=0, gid=0, env={"PATH": "/usr/bin"})


def test_spec_round_trip_drops_secret_values():
    spec = SandboxSpec.build(
        "worker", memory="512M", cpus=1.5, user="1000:1000", env={"A": "1"}, workdir="/work",
        volumes={"/work": "/srv/data"}, network=Network.allow_all(),
        secrets=[Secret.env("TOKEN", value="v" * 20, allow_hosts=["github.com"])],
    )
    data = json.loads(json.dumps(spec.to_json()))
    assert "v" * 20 not in json.dumps(data)
    restored = SandboxSpec.from_json(data)
    assert restored.memory_bytes == 512 * 1024**2
    assert restored.volumes == (Volume("/srv/data", "/work", False),)
    assert restored.secrets[0].value is None
    assert restored.network == Network.allow_all()


@pytest.mark.parametrize("kwargs, field", [
    ({"name": "Bad Name"}, "name"),
    ({"name": "ok", "runtime": "kvm"}, "runtime"),
    ({"name": "ok", "pids": 4}, "pids"),
    ({"name": "ok", "user": "root:"}, "user"),
    ({"name": "ok", "env": {"1X": "y"}}, "env"),
    ({"name": "ok", "workdir": "relative"}, "workdir"),
    ({"name": "ok", "hostname": "a_b"}, "hostname"),
])
def test_spec_rejects(kwargs, field):
    with pytest.raises(InvalidSpecError) as info:
        SandboxSpec(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize("text, expected", [
    ("/a:/b", Volume("/a", "/b", False)),
    ("/a:/b:ro", Volume("/a", "/b", True)),
    ("/a:/b:rw", Volume("/a", "/b", False)),
])
def test_volume_parse(text, expected):
    assert Volume.parse(text) == expected


@pytest.mark.parametrize("text", ["a:/b", "/a:b", "/a", "/a:/proc", "/a:/b:rx", "/a:/x/../etc"])
def test_volume_parse_rejects(text):
    with pytest.raises(InvalidSpecError):
        Volume.parse(text)


def test_config_isolation_settings():
    spec = SandboxSpec.build("iso", memory="256M", cpus=0.5, pids=100, volumes=["/data:/mnt/data:ro"])
    config = build_config(spec, INPUTS)
    linux = config["linux"]
    assert [ns["type"] for ns in linux["namespaces"]] == ["pid", "ipc", "uts", "mount", "cgroup", "network"]
    assert linux["namespaces"][-1]["path"] == "/proc/1/fd/3"
    assert linux["resources"]["memory"] == {"limit": 256 * 1024**2, "swap": 256 * 1024**2}
    assert linux["resources"]["cpu"] == {"quota": 50_000, "period": 100_000}
    assert linux["resources"]["pids"] == {"limit": 100}
    assert config["process"]["noNewPrivileges"] is True
    assert config["process"]["capabilities"]["bounding"] == list(CAPABILITIES)
    assert "CAP_NET_RAW" not in CAPABILITIES
    assert "CAP_SYS_ADMIN" not in CAPABILITIES
    assert "/proc/kcore" in linux["maskedPaths"]
    volume = next(m for m in config["mounts"] if m["destination"] == "/mnt/data")
    assert "ro" in volume["options"]


def test_seccomp_denies_escape_syscalls():
    config = build_config(SandboxSpec.build("sec"), INPUTS)
    denied = config["linux"]["seccomp"]["syscalls"][0]
    assert denied["action"] == "SCMP_ACT_ERRNO"
    for name in ("mount", "kexec_load", "init_module", "bpf", "keyctl", "setns", "unshare", "open_by_handle_at"):
        assert name in denied["names"]
    assert set(DENIED_SYSCALLS) == set(denied["names"])
