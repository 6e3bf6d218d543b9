"""sealbox: Linux sandboxes whose only way out is a secret-injecting egress gateway."""

from sealbox.errors import (
    ExecTimeoutError,
    ImageNotFoundError,
    InvalidSpecError,
    PrerequisiteError,
    SandboxExistsError,
    SandboxNotFoundError,
    SandboxNotRunningError,
    SandboxStartError,
    SealboxError,
)
from sealbox.runtime.execution import Exit, Stderr, Stdout
from sealbox.sandbox import ExecOutput, Sandbox
from sealbox.spec.network import Action, Network, NetworkPolicy, Rule
from sealbox.spec.sandbox import Volume
from sealbox.spec.secret import Secret, SecretInjection

__all__ = [
    "Action",
    "ExecOutput",
    "ExecTimeoutError",
    "Exit",
    "ImageNotFoundError",
    "InvalidSpecError",
    "Network",
    "NetworkPolicy",
    "PrerequisiteError",
    "Rule",
    "Sandbox",
    "SandboxExistsError",
    "SandboxNotFoundError",
    "SandboxNotRunningError",
    "SandboxStartError",
    "Secret",
    "SecretInjection",
    "SealboxError",
    "Stderr",
    "Stdout",
    "Volume",
]
