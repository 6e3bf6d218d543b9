"""Make every common client inside a sandbox trust the sandbox's CA.

``install_ca`` writes into the sandbox's writable root filesystem before the
container starts. It appends the CA to the image's system bundles, writes it
where ``update-ca-certificates`` (Debian, Alpine) and ``update-ca-trust``
(Fedora, RHEL) pick it up when the image rebuilds its bundle, and writes a
combined bundle that the returned environment variables point at.

Paths are resolved the way a container runtime resolves them: inside ``root``,
with absolute symlink targets taken relative to ``root`` and ``..`` stopping
at ``root``, so no symlink in the image can send a write outside it. Files are
replaced by renaming a new file over them rather than written in place. So
even a root directory that shares inodes with the image through hard links
leaves the image unchanged.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import stat
from collections import deque
from pathlib import Path

__all__ = ["CA_ENV_VARS", "SANDBOX_BUNDLE", "SANDBOX_CA_FILE", "SYSTEM_BUNDLES", "install_ca"]

logger = logging.getLogger(__name__)

SANDBOX_BUNDLE = "/etc/sealbox/ca-bundle.crt"
SANDBOX_CA_FILE = "/etc/sealbox/ca.crt"
CA_ENV_VARS = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
    "NODE_EXTRA_CA_CERTS",
    "AWS_CA_BUNDLE",
    "CARGO_HTTP_CAINFO",
    "DENO_CERT",
)
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # written by update-ca-certificates (Debian, Ubuntu, Alpine)
    "/etc/pki/tls/certs/ca-bundle.crt",  # written by update-ca-trust (Fedora, RHEL)
    "/etc/ssl/cert.pem",  # default CA file of OpenSSL builds with OPENSSLDIR=/etc/ssl
)
ANCHOR_DIRS = (
    "/usr/local/share/ca-certificates",  # read by update-ca-certificates
    "/etc/pki/ca-trust/source/anchors",  # read by update-ca-trust
)
# The same limit as Linux's MAXSYMLINKS.
_MAX_SYMLINKS = 40
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_DIR_MODE = 0o755
_FILE_MODE = 0o644
_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _resolve(root: Path, path: str) -> Path:
    """Return the host path of the sandbox path ``path``, following symlinks inside ``root``.

    Components that do not exist are kept as they are. The result always lies
    under ``root``.

    Raises:
        OSError: ELOOP after more than 40 symlinks.
    """
    pending = deque(part for part in path.split("/") if part)
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.popleft()
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            mode = os.lstat(candidate).st_mode
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        if not stat.S_ISLNK(mode):
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", str(root.joinpath(path.lstrip("/"))))
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending.extendleft(reversed([segment for segment in target.split("/") if segment]))
    return root.joinpath(*resolved)


def _make_dirs(root: Path, path: str) -> Path:
    """Create the sandbox directory ``path`` and missing parents with mode 0755; return its host path."""
    directory = _resolve(root, path)
    missing: list[Path] = []
    current = directory
    while current != root and not os.path.lexists(current):
        missing.append(current)
        current = current.parent
    for created in reversed(missing):
        created.mkdir()
        # mkdir applies the umask, so set the mode explicitly.
        os.chmod(created, _DIR_MODE)
    if not directory.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(directory))
    return directory


def _replace_file(target: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file next to ``target`` and rename it over ``target``.

    The rename replaces a symlink or hard link at ``target`` itself, so the file
    it pointed to stays unchanged.
    """
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(descriptor, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
    except BaseException:
        os.close(descriptor)
        os.unlink(temporary)
        raise
    os.close(descriptor)
    try:
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise


def _write_owned_file(root: Path, path: str, data: bytes) -> None:
    directory, _, name = path.rpartition("/")
    _replace_file(_make_dirs(root, directory) / name, data, _FILE_MODE)


def _with_newline(data: bytes) -> bytes:
    return data if not data or data.endswith(b"\n") else data + b"\n"


def _append_to_bundle(bundle: Path, ca_pem: bytes) -> bytes:
    """Append ``ca_pem`` to the regular file ``bundle`` unless it is already there.

    Returns the bundle's content as it was before sealbox added the CA.
    """
    original = bundle.read_bytes()
    if ca_pem in original:
        return original.replace(ca_pem, b"")
    _replace_file(bundle, _with_newline(original) + ca_pem, stat.S_IMODE(os.stat(bundle).st_mode))
    return original


def install_ca(root: Path, ca_pem: bytes, *, name: str) -> dict[str, str]:
    """Install the CA certificate ``ca_pem`` in the root filesystem ``root``.

    Returns the environment variables that point clients at the combined
    bundle. NODE_EXTRA_CA_CERTS points at a file with only the CA, because
    Node.js adds it to its built-in roots. Calling this again with the same CA
    appends nothing twice.

    Raises:
        ValueError: ``ca_pem`` is not a PEM certificate or ``name`` cannot be
            part of a file name.
        OSError: a file in ``root`` could not be read or written.
    """
    if _PEM_BEGIN not in ca_pem:
        raise ValueError("invalid ca_pem: expected a PEM certificate starting with -----BEGIN CERTIFICATE-----")
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid name {name[:60]!r}: expected letters, digits, '.', '_' or '-'")
    root = Path(os.path.realpath(root))
    if not root.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "root filesystem is not a directory", str(root))
    ca_pem = ca_pem.strip() + b"\n"

    image_roots: bytes | None = None
    seen: set[Path] = set()
    for bundle_path in SYSTEM_BUNDLES:
        bundle = _resolve(root, bundle_path)
        if bundle in seen:
            continue
        try:
            mode = os.lstat(bundle).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not stat.S_ISREG(mode):
            continue
        seen.add(bundle)
        original = _append_to_bundle(bundle, ca_pem)
        logger.debug("the sandbox CA is in %s", bundle_path)
        if image_roots is None:
            image_roots = original

    for directory in ANCHOR_DIRS:
        _write_owned_file(root, f"{directory}/sealbox-{name}.crt", ca_pem)
    _write_owned_file(root, SANDBOX_CA_FILE, ca_pem)
    _write_owned_file(root, SANDBOX_BUNDLE, _with_newline(image_roots or b"") + ca_pem)
    if image_roots is None:
        logger.info("the image has no system CA bundle; %s contains only the sandbox CA", SANDBOX_BUNDLE)

    # NOTE: hashed links in /etc/ssl/certs (read by clients that use a CA
    # directory), Java keystores and NSS databases are not updated. Clients that
    # read only those do not trust the CA until update-ca-certificates or
    # update-ca-trust runs in the sandbox.
    environment = {variable: SANDBOX_BUNDLE for variable in CA_ENV_VARS}
    environment["NODE_EXTRA_CA_CERTS"] = SANDBOX_CA_FILE
    return environment
