"""The test world: local upstream servers that sealbox's tests point names at.

Every server listens on 127.0.0.1 only, on a port the kernel picks unless the
caller fixes it. TLS servers present certificates from the world's test CA for
``CERT_NAMES``. Tests reach them by address, or by name through a static map
(``github.com:443 -> 127.0.0.1:<git port>``, see ``TestWorld.name_map()``),
never through the host's resolver.

Processes, all started and stopped by ``TestWorld`` and tracked by PID:

- one Python child (``sealbox.testworld.servers``) serving the recording
  HTTP server (TLS and plaintext), the TCP echo server, the canary (TLS and
  plaintext), and the wrong-name and untrusted TLS servers;
- FCGI_WORKERS fcgiwrap processes sharing one unix socket (passed as their
  stdin, the FastCGI convention), each running ``git http-backend`` per request;
- one nginx master with its workers, serving git smart HTTP and the package index.

Each process runs in a process group of its own, so stop() can also end the
processes they started (nginx workers, git). The parent binds every listening
socket itself and passes it down, so all ports are known before any child runs.
"""

from __future__ import annotations

import base64

import hashlib
import http.client
import json
import logging
import os
import selectors
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import sealbox
from sealbox.spec.network import Action, Network, NetworkPolicy, Rule

from .ca import TestCA
from .nginx import NginxLayout, htpasswd_line, render_config
from .processes import SYSTEM_PATH, Child, ChildProcesses, TestWorldError, find_program, log_tail
from .pypi import PROBE_PROJECT, IndexedFile, build_index
from .recording import Recording
from .repogen import build_small_repo, ensure_large_repo, grow_repo, run_git

logger = logging.getLogger(__name__)

# A token in GitHub's classic format: "ghp_" and 36 alphanumeric characters.
DEFAULT_TOKEN = "ghp_" + "sealboxtestworld" + "0123456789ABCDEFGHIJ"
CERT_NAMES: tuple[str, ...] = (
    "github.com",
    "api.github.com",
    "codeload.github.com",
    "raw.githubusercontent.com",
    "objects.githubusercontent.com",
    "pypi.test",
    "files.pypi.test",
    "canary.test",
    "echo.test",
    "localhost",
    "127.0.0.1",
)
WRONG_NAME = "other.test"
GIT_ORG = "org"
GIT_USER = "x-access-token"
# public and private are copies of the large repository, and small is tiny. Only private requires the token.
REPO_NAMES = ("public", "private", "small")
PYPI_USER = "__token__"
PYTHON_SERVERS = ("https", "http", "tcp_echo", "canary", "canary_plain", "wrong_name", "untrusted")
NGINX_SERVERS = ("git", "pypi")
SERVER_NAMES = PYTHON_SERVERS + NGINX_SERVERS
RECORDING_SERVERS = ("https", "http", "canary", "canary_plain", "wrong_name", "untrusted")
FCGI_WORKERS = 4
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# Linux limits AF_UNIX paths to 108 bytes, so longer world paths use a short temporary directory.
MAX_SOCKET_PATH = 100

RecordingServer = Literal["https", "http", "canary", "canary_plain", "wrong_name", "untrusted"]


@dataclass(frozen=True)
class Endpoint:
    """A server's listening address."""

    host: str
    port: int

    @property
    def addr(self) -> str:
        """``host:port``, as used in static maps and curl's ``--connect-to``."""
        return f"{self.host}:{self.port}"


class TestWorld:
    """Local TLS, HTTP, TCP, git and package index servers for sealbox's tests.

    ``start()`` prepares certificates, repositories and the index under
    directory, starts every process and waits until each server responds.
    ``stop()`` ends them. Also a context manager.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        directory: Path,
        *,
        token: str = DEFAULT_TOKEN,
        repo_cache: Path | None = None,
        ports: Mapping[str, int] | None = None,
    ) -> None:
        unknown = set(ports or {}) - set(SERVER_NAMES)
        if unknown:
            raise ValueError(f"invalid server names in ports {sorted(unknown)}: expected names from {SERVER_NAMES}")
        if not token or any(character in token for character in ":\r\n"):
            raise ValueError("invalid token: expected a non-empty value without ':' or line breaks")
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.repo_cache = repo_cache
        self.names: tuple[str, ...] = CERT_NAMES
        self._fixed_ports = dict(ports or {})
        self.ca = TestCA.create(self.directory / "ca", "sealbox test world CA")
        self.untrusted_ca = TestCA.create(self.directory / "untrusted-ca", "sealbox untrusted CA")
        repo_root = self.directory / "git" / "repos" / GIT_ORG
        self.repos: dict[str, Path] = {name: repo_root / f"{name}.git" for name in REPO_NAMES}
        self.packages: list[IndexedFile] = []
        self._endpoints: dict[str, Endpoint] = {}
        self._processes = ChildProcesses(self.directory / "logs", self.directory)
        self._socket_dir: Path | None = None
        self._started = False

    # -- endpoints ---------------------------------------------------------

    def _endpoint(self, name: str) -> Endpoint:
        try:
            return self._endpoints[name]
        except KeyError:
            raise TestWorldError(f"test world endpoint {name!r} is not available: call start() first") from None

    @property
    def https(self) -> Endpoint:
        """Recording HTTP server over TLS, ALPN h2 and http/1.1."""
        return self._endpoint("https")

    @property
    def http(self) -> Endpoint:
        """Recording HTTP server in plaintext."""
        return self._endpoint("http")

    @property
    def tcp_echo(self) -> Endpoint:
        """Raw TCP echo server that honours half-close."""
        return self._endpoint("tcp_echo")

    @property
    def canary(self) -> Endpoint:
        """TLS canary that records every byte and responds with 200 ``ok``."""
        return self._endpoint("canary")

    @property
    def canary_plain(self) -> Endpoint:
        """The canary in plaintext."""
        return self._endpoint("canary_plain")

    @property
    def git(self) -> Endpoint:
        """nginx git smart-HTTP server over TLS (HTTP/1.1)."""
        return self._endpoint("git")

    @property
    def wrong_name(self) -> Endpoint:
        """TLS server whose certificate, from the world CA, names only ``other.test``."""
        return self._endpoint("wrong_name")

    @property
    def untrusted(self) -> Endpoint:
        """TLS server with a certificate for CERT_NAMES issued by ``untrusted_ca``."""
        return self._endpoint("untrusted")

    @property
    def pypi(self) -> Endpoint:
        """Package index over TLS (PEP 503 simple layout) behind Basic auth ``__token__:<token>``."""
        return self._endpoint("pypi")

    def endpoints(self) -> dict[str, Endpoint]:
        """Return every server's endpoint by server name."""
        return {name: self._endpoint(name) for name in SERVER_NAMES}

    def name_map(self) -> dict[str, str]:
        """Return the static map ``name:port -> 127.0.0.1:port`` that points names at the servers.

        github.com goes to the git server. The other GitHub names and
        echo.test go to the recording server, over TLS on port 443 and in
        plaintext on port 80. pypi.test and files.pypi.test go to the package
        index, canary.test to the canary, and echo.test:7 to the TCP echo server.
        """
        mapping: dict[str, str] = {"github.com:443": self.git.addr}
        for name in ("api.github.com", "codeload.github.com", "raw.githubusercontent.com",
                     "objects.githubusercontent.com", "echo.test"):
            mapping[f"{name}:443"] = self.https.addr
            mapping[f"{name}:80"] = self.http.addr
        mapping["pypi.test:443"] = self.pypi.addr
        mapping["files.pypi.test:443"] = self.pypi.addr
        mapping["canary.test:443"] = self.canary.addr
        mapping["canary.test:80"] = self.canary_plain.addr
        mapping["echo.test:7"] = self.tcp_echo.addr
        return mapping

    def connect_to_entries(self, overrides: Mapping[str, str] | None = None) -> list[str]:
        """Return ``name_map()``, updated with ``overrides``, as gateway ``connect_to`` entries (NAME:PORT:ADDR:PORT)."""
        mapping = {**self.name_map(), **(overrides or {})}
        entries = []
        for key, address in mapping.items():
            name, _, port = key.rpartition(":")
            entries.append(f"{name}:{port}:{address}")
        return entries

    def sandbox_network(self, overrides: Mapping[str, str] | None = None) -> Network:
        """Return a sandbox network that reaches only the world's names, through the gateway's static map.

        Every other name is denied, so a client in the sandbox that tries a
        name outside the map never makes the gateway ask the host's resolver.
        """
        mapping = {**self.name_map(), **(overrides or {})}
        names = sorted({key.rpartition(":")[0] for key in mapping})
        policy = NetworkPolicy(default_egress=Action.DENY, rules=tuple(Rule.allow(name) for name in names))
        return Network(policy=policy, connect_to=self.connect_to_entries(overrides))

    # -- URLs and clients --------------------------------------------------

    def git_url(self, repo: str, host: str = "github.com") -> str:
        """Return ``https://<host>/org/<repo>.git``, which resolves only through a static map to the git server."""
        return f"https://{host}/{GIT_ORG}/{repo}.git"

    def direct_git_url(self, repo: str) -> str:
        """Return the repository's URL by address, ``https://127.0.0.1:<port>/org/<repo>.git``."""
        return f"https://{self.git.addr}/{GIT_ORG}/{repo}.git"

    def pypi_index_url(self, *, with_token: bool = False, host: str | None = None) -> str:
        """Return the simple index URL, by address unless host is given, optionally with credentials."""
        authority = host or self.pypi.addr
        credentials = f"{PYPI_USER}:{self.token}@" if with_token else ""
        return f"https://{credentials}{authority}/simple/"

    def client_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return a clean environment for host-side clients that trusts only the world CA.

        The caller's CA, proxy and git config variables are dropped, and every
        common CA variable points at the world CA instead.
        """
        ca = str(self.ca.cert_path)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.directory / "client-home"),
            "LANG": "C.UTF-8",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "SSL_CERT_FILE": ca,
            "CURL_CA_BUNDLE": ca,
            "GIT_SSL_CAINFO": ca,
            "REQUESTS_CA_BUNDLE": ca,
            "PIP_CERT": ca,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
        }
        (self.directory / "client-home").mkdir(exist_ok=True)
        env.update(extra or {})
        return env

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> TestWorld:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start every server and wait until each one responds. Do nothing if already started."""
        if self._started:
            return
        started = time.monotonic()
        try:
            self._prepare()
            sockets = self._bind()
            try:
                self._start_python_servers(sockets)
                self._start_fcgiwrap()
                self._start_nginx(sockets)
            finally:
                for sock in sockets.values():
                    sock.close()
            self._wait_ready()
            # The readiness probes are not the caller's traffic.
            self.clear_recordings()
        except BaseException:
            self.stop()
            raise
        self._started = True
        logger.info("test world started in %s in %.1f s", self.directory, time.monotonic() - started)

    def stop(self) -> None:
        """Stop every process of the world by process group and wait until all are gone.

        The directory, the CA and the repositories stay, so start() can run again.
        """
        self._processes.stop(STOP_TIMEOUT)
        self._endpoints.clear()
        if self._socket_dir is not None and self._socket_dir != self.directory / "run":
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self._socket_dir = None
        if self._started:
            logger.info("test world stopped in %s", self.directory)
        self._started = False

    def process_ids(self) -> list[int]:
        """Return the PIDs of every live process of the world, including those its children started."""
        return self._processes.process_ids()

    # -- preparation -------------------------------------------------------

    def _prepare(self) -> None:
        directory = self.directory
        for sub in ("logs", "certs", "nginx/temp", "git/home"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        run_dir = directory / "run"
        run_dir.mkdir(exist_ok=True)
        if len(str(run_dir / "fcgiwrap.sock")) > MAX_SOCKET_PATH:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="sbtw-"))
        else:
            self._socket_dir = run_dir
        for stale in ("control.sock", "fcgiwrap.sock"):
            (self._socket_dir / stale).unlink(missing_ok=True)

        certs = directory / "certs"
        self._world_cert = self.ca.issue(self.names, directory=certs, stem="world")
        self._wrong_name_cert = self.ca.issue([WRONG_NAME], directory=certs, stem="wrong-name")
        self._untrusted_cert = self.untrusted_ca.issue(self.names, directory=certs, stem="untrusted")

        self._prepare_repos()
        self.packages = build_index(directory / "pypi")
        (directory / "nginx" / "git.htpasswd").write_text(htpasswd_line(GIT_USER, self.token))
        (directory / "nginx" / "pypi.htpasswd").write_text(htpasswd_line(PYPI_USER, self.token))

    def _prepare_repos(self) -> None:
        """Create the served repositories unless a previous start in this directory did."""
        large: Path | None = None
        for name, repo in self.repos.items():
            repo.parent.mkdir(parents=True, exist_ok=True)
            if repo.is_dir():
                continue
            if name == "small":
                build_small_repo(repo)
            else:
                large = large or ensure_large_repo(self.repo_cache)
                # A local clone hardlinks the cached pack files, which git never modifies in place.
                run_git(["clone", "--quiet", "--bare", str(large), str(repo)])
                run_git(["remote", "remove", "origin"], cwd=repo)
            run_git(["config", "http.receivepack", "true"], cwd=repo)
            run_git(["config", "uploadpack.allowFilter", "true"], cwd=repo)

    def _bind(self) -> dict[str, socket.socket]:
        sockets: dict[str, socket.socket] = {}
        try:
            for name in SERVER_NAMES:
                sockets[name] = socket.create_server(("127.0.0.1", self._fixed_ports.get(name, 0)), backlog=1024)
        except OSError as error:
            for sock in sockets.values():
                sock.close()
            raise TestWorldError(f"binding the {name} listener on 127.0.0.1 failed: {error}") from error
        self._endpoints = {name: Endpoint("127.0.0.1", sock.getsockname()[1]) for name, sock in sockets.items()}
        return sockets

    # -- processes ---------------------------------------------------------

    def _start_python_servers(self, sockets: dict[str, socket.socket]) -> None:
        assert self._socket_dir is not None
        self._control_path = self._socket_dir / "control.sock"
        world_cert = [str(path) for path in self._world_cert]
        listeners: dict[str, dict[str, Any]] = {
            "https": {"kind": "http", "cert": world_cert, "alpn": ["h2", "http/1.1"]},
            "http": {"kind": "http"},
            "tcp_echo": {"kind": "echo"},
            "canary": {"kind": "canary", "cert": world_cert, "alpn": ["http/1.1"]},
            "canary_plain": {"kind": "canary"},
            "wrong_name": {"kind": "http", "cert": [str(p) for p in self._wrong_name_cert], "alpn": ["h2", "http/1.1"]},
            "untrusted": {"kind": "http", "cert": [str(p) for p in self._untrusted_cert], "alpn": ["h2", "http/1.1"]},
        }
        for name, listener in listeners.items():
            listener["fd"] = sockets[name].fileno()
        config_path = self.directory / "run" / "servers.json"
        config_path.write_text(json.dumps({"listeners": listeners, "control": str(self._control_path)}, indent=2))

        env = dict(os.environ)
        package_root = str(Path(sealbox.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        child = self._processes.spawn(
            "servers",
            [sys.executable, "-m", "sealbox.testworld.servers", str(config_path)],
            env=env,
            pass_fds=tuple(listener["fd"] for listener in listeners.values()),
            stdout=subprocess.PIPE,
        )
        self._wait_for_ready_line(child)

    def _wait_for_ready_line(self, child: Child) -> None:
        stdout = child.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    break
                data = os.read(stdout.fileno(), 4096)
                if not data:
                    break
                line += data
        stdout.close()
        if line.strip() != b'{"ready": true}':
            log = log_tail(child.log_path)
            raise TestWorldError(
                f"the test world's Python servers did not start (output {line[:200]!r}); log {child.log_path}:\n{log}"
            )

    def _start_fcgiwrap(self) -> None:
        assert self._socket_dir is not None
        self._fcgi_path = self._socket_dir / "fcgiwrap.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self._fcgi_path))
            listener.listen(128)
            env = {"PATH": SYSTEM_PATH}
            program = find_program("fcgiwrap", "fcgiwrap")
            group: int | None = None
            for number in range(FCGI_WORKERS):
                child = self._processes.spawn(
                    f"fcgiwrap-{number}", [program], env=env, log_name="fcgiwrap", stdin=listener.fileno(), group=group
                )
                group = child.group
        finally:
            listener.close()

    def _start_nginx(self, sockets: dict[str, socket.socket]) -> None:
        assert self._socket_dir is not None
        nginx_dir = self.directory / "nginx"
        layout = NginxLayout(
            prefix=nginx_dir,
            logs=self.directory / "logs",
            chain=self._world_cert[0],
            key=self._world_cert[1],
            git_port=self.git.port,
            git_root=self.directory / "git" / "repos",
            git_home=self.directory / "git" / "home",
            git_htpasswd=nginx_dir / "git.htpasswd",
            fcgi_socket=self._fcgi_path,
            pypi_port=self.pypi.port,
            pypi_root=self.directory / "pypi",
            pypi_htpasswd=nginx_dir / "pypi.htpasswd",
        )
        config = nginx_dir / "nginx.conf"
        config.write_text(render_config(layout))
        fds = tuple(sockets[name].fileno() for name in NGINX_SERVERS)
        env = {"PATH": SYSTEM_PATH, "NGINX": "".join(f"{fd};" for fd in fds)}
        error_log = self.directory / "logs" / "nginx-error.log"
        argv = [find_program("nginx", "nginx-light"), "-c", str(config), "-p", str(nginx_dir), "-e", str(error_log)]
        self._processes.spawn("nginx", argv, env=env, pass_fds=fds)

    def _wait_ready(self) -> None:
        """Wait until every server responds to a real request, or raise TestWorldError."""
        deadline = time.monotonic() + START_TIMEOUT
        checks: dict[str, Callable[[], bool]] = {
            "git": lambda: self._https_status(self.git, "/org/small.git/info/refs?service=git-upload-pack") == 200,
            "pypi": lambda: self._https_status(self.pypi, "/simple/") == 401,
            "https": lambda: self._https_status(self.https, "/") == 200,
            "control": lambda: self._control({"op": "ping"})[0].get("ok") is True,
        }
        for name, check in checks.items():
            error: Exception | None = None
            while True:
                self._processes.raise_if_exited()
                try:
                    if check():
                        break
                except (OSError, http.client.HTTPException, ValueError) as caught:
                    error = caught
                if time.monotonic() > deadline:
                    raise TestWorldError(f"test world server {name} not ready after {START_TIMEOUT:g} s: {error}")
                time.sleep(0.05)

    def _https_status(self, endpoint: Endpoint, path: str) -> int:
        context = ssl.create_default_context(cafile=str(self.ca.cert_path))
        connection = http.client.HTTPSConnection(endpoint.host, endpoint.port, context=context, timeout=5)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    # -- recordings --------------------------------------------------------

    def _control(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """Send one control request to the Python servers and return (header, payload)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
            control.settimeout(60)
            control.connect(str(self._control_path))
            control.sendall(json.dumps(request).encode() + b"\n")
            chunks: list[bytes] = []
            while data := control.recv(1 << 20):
                chunks.append(data)
        reply = b"".join(chunks)
        line, _, payload = reply.partition(b"\n")
        header = json.loads(line)
        if "error" in header:
            raise TestWorldError(f"control request {request} failed: {header['error']}")
        return header, payload

    def recordings(self, server: RecordingServer) -> list[Recording]:
        """Return what server received on each connection so far, oldest first."""
        if server not in RECORDING_SERVERS:
            raise ValueError(f"invalid recording server {server!r}: expected one of {RECORDING_SERVERS}")
        self._endpoint(server)
        header, payload = self._control({"op": "recordings", "server": server})
        result: list[Recording] = []
        offset = 0
        for item in header["recordings"]:
            size = item.pop("size")
            result.append(Recording(received=payload[offset : offset + size], **item))
            offset += size
        return result

    def clear_recordings(self) -> None:
        """Forget the recordings of every server."""
        self._control({"op": "clear"})

    # -- repositories ------------------------------------------------------

    def add_commits(self, repo: str, commits: int, refs: int) -> None:
        """Append commits to ``main`` of a served repository and add refs at distinct new commits."""
        if repo not in self.repos:
            raise ValueError(f"unknown repository {repo!r}: expected one of {sorted(self.repos)}")
        grow_repo(self.repos[repo], commits, refs)

    def received_credentials(self) -> list[tuple[int, str, str, str]]:
        """Return (status, path, user, SHA-256 of the password) for each git request that carried Basic auth."""
        log_path = self.directory / "logs" / "git-credentials.log"
        if not log_path.exists():
            return []
        entries = []
        for line in log_path.read_text().splitlines():
            fields = line.split(" ")
            if len(fields) != 5 or fields[3] != "Basic":
                continue
            try:
                user, _, password = base64.b64decode(fields[4]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            entries.append((int(fields[0]), fields[2], user, hashlib.sha256(password.encode()).hexdigest()))
        return entries

    def describe(self) -> dict[str, Any]:
        """Return the endpoints, CA paths, URLs and token digest (never the token) as JSON-ready data."""
        return {
            "directory": str(self.directory),
            "ca_cert": str(self.ca.cert_path),
            "untrusted_ca_cert": str(self.untrusted_ca.cert_path),
            "token_sha256": hashlib.sha256(self.token.encode()).hexdigest(),
            "names": list(self.names),
            "endpoints": {name: endpoint.addr for name, endpoint in self.endpoints().items()},
            "name_map": self.name_map(),
            "git": {
                "repos": {name: str(path) for name, path in self.repos.items()},
                "urls": {name: self.git_url(name) for name in self.repos},
                "direct_urls": {name: self.direct_git_url(name) for name in self.repos},
                "private_user": GIT_USER,
            },
            "pypi": {
                "index_url": self.pypi_index_url(host="pypi.test"),
                "direct_index_url": self.pypi_index_url(),
                "user": PYPI_USER,
                "projects": [PROBE_PROJECT],
            },
            "processes": self._processes.pids_by_name(),
            "control_socket": str(self._control_path),
            "logs": str(self.directory / "logs"),
        }
