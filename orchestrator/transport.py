"""How the controller reaches a host: one paramiko SSH connection per host, or this machine (local).

Everything that touches a host goes through a ``Transport``: remote commands (argv, shell-quoted as a
whole, never concatenated from spec values), small file writes over SFTP, and the Docker Engine API
(docker_api.py tunnels it through this same connection).
"""
from __future__ import annotations

import base64
import hashlib
import os
import shlex
import socket
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import paramiko

from .errors import ConnectError, HostKeyError, RemoteError
from .spec import HostRef, SSHSpec


@dataclass
class ExecResult:
    rc: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    def err_line(self) -> str:
        lines = [ln for ln in self.stderr.decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1].strip() if lines else f"exit code {self.rc}"


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _Policy(paramiko.MissingHostKeyPolicy):
    """``reject``: refuse unknown keys (with the fingerprint). ``accept-new``: record a new host's key in
    known_hosts; a *changed* key is still refused (paramiko raises BadHostKeyException before this runs)."""

    def __init__(self, mode: str, known_hosts: Path, shown: str):
        self.mode, self.known_hosts, self.shown = mode, known_hosts, shown

    def missing_host_key(self, client, hostname, key):
        fp = fingerprint(key)
        if self.mode != "accept-new":
            raise HostKeyError(
                f"{self.shown}: host key not in {self.known_hosts} ({key.get_name()} {fp}); refusing to connect",
                hint="verify the fingerprint out of band, then add it (ssh-keyscan) or set ssh.host_key_policy: accept-new",
            )
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        entry = paramiko.hostkeys.HostKeyEntry([hostname], key)
        with open(self.known_hosts, "a") as f:
            f.write(entry.to_line())
        os.chmod(self.known_hosts, 0o600)


@dataclass(frozen=True)
class SSHTarget:
    """A host entry resolved against ssh_config: where to connect and how."""

    shown: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    proxy_jump: Optional[str]
    proxy_command: Optional[str]
    known_hosts: Path


def _ssh_config(spec: SSHSpec) -> paramiko.SSHConfig:
    path = Path(os.path.expanduser(spec.config_file or "~/.ssh/config"))
    if path.is_file():
        return paramiko.SSHConfig.from_path(str(path))
    if spec.config_file:
        raise ConnectError(f"ssh.config_file {spec.config_file}: no such file")
    return paramiko.SSHConfig()


def resolve_target(ref: HostRef, spec: SSHSpec, config: Optional[paramiko.SSHConfig] = None) -> SSHTarget:
    conf = (config or _ssh_config(spec)).lookup(ref.address)
    ids: list[str] = []
    if spec.identity_file:
        ids.append(os.path.expanduser(spec.identity_file))
    ids += [os.path.expanduser(p) for p in conf.get("identityfile", [])]
    kh = spec.known_hosts or (conf.get("userknownhostsfile", "").split() or ["~/.ssh/known_hosts"])[0]
    return SSHTarget(
        shown=ref.text,
        hostname=conf.get("hostname", ref.address),
        port=ref.port or int(conf.get("port", 22)),
        user=ref.user or conf.get("user") or os.environ.get("USER") or "root",
        identity_files=tuple(ids),
        proxy_jump=conf.get("proxyjump"),
        proxy_command=conf.get("proxycommand"),
        known_hosts=Path(os.path.expanduser(kh)),
    )


def _connect_client(target: SSHTarget, spec: SSHSpec, config: paramiko.SSHConfig,
                    sock=None) -> tuple[paramiko.SSHClient, list[paramiko.SSHClient]]:
    """Connect and authenticate with verified host keys. Returns the client and any jump clients."""
    jumps: list[paramiko.SSHClient] = []
    if sock is None and target.proxy_jump and target.proxy_jump.lower() != "none":
        hop_client = None
        for hop in target.proxy_jump.split(","):
            hop_ref = HostRef.parse(hop.strip())
            hop_target = resolve_target(hop_ref, spec, config)
            hop_sock = None
            if hop_client is not None:
                hop_sock = _direct_tcpip(hop_client, hop_target, target.shown)
            hop_client, more = _connect_client(hop_target, spec, config, sock=hop_sock or _NO_JUMP)
            jumps += more + [hop_client]
        sock = _direct_tcpip(hop_client, target, target.shown)
    elif sock is None and target.proxy_command:
        sock = paramiko.ProxyCommand(target.proxy_command)
    if sock is _NO_JUMP:
        sock = None

    client = paramiko.SSHClient()
    try:
        client.load_system_host_keys()
    except OSError:
        pass
    if target.known_hosts.is_file():
        try:
            client.load_host_keys(str(target.known_hosts))
        except (OSError, paramiko.SSHException) as err:
            raise HostKeyError(f"{target.shown}: cannot read known_hosts {target.known_hosts}: {err}") from None
    client.set_missing_host_key_policy(_Policy(spec.host_key_policy, target.known_hosts, target.shown))
    try:
        client.connect(
            target.hostname, port=target.port, username=target.user,
            key_filename=list(target.identity_files) or None, timeout=spec.connect_timeout,
            banner_timeout=spec.connect_timeout, auth_timeout=spec.connect_timeout,
            allow_agent=True, look_for_keys=not target.identity_files, sock=sock,
        )
    except HostKeyError:
        client.close()
        raise
    except paramiko.BadHostKeyException as err:
        client.close()
        raise HostKeyError(
            f"{target.shown}: HOST KEY CHANGED: known_hosts {target.known_hosts} has {err.expected_key.get_name()} "
            f"{fingerprint(err.expected_key)}, the host offered {err.key.get_name()} {fingerprint(err.key)}; "
            "refusing to connect (possible man-in-the-middle)",
            hint="if the host was reinstalled, remove its old line from known_hosts and verify the new key",
        ) from None
    except paramiko.AuthenticationException as err:
        client.close()
        raise ConnectError(f"{target.shown}: authentication failed for {target.user}@{target.hostname} ({err})") from None
    except (socket.timeout, TimeoutError):
        client.close()
        raise ConnectError(f"{target.shown}: timed out after {spec.connect_timeout:g}s connecting to "
                           f"{target.hostname}:{target.port}") from None
    except paramiko.SSHException as err:
        client.close()
        if "No authentication methods available" in str(err):
            raise ConnectError(f"{target.shown}: authentication failed for {target.user}@{target.hostname}: no key to "
                               "offer (no identity file, no ssh-agent key, no default ~/.ssh key)") from None
        raise ConnectError(f"{target.shown}: cannot connect to {target.hostname}:{target.port}: "
                           f"{err or type(err).__name__}") from None
    except (OSError, EOFError) as err:
        client.close()
        raise ConnectError(f"{target.shown}: cannot connect to {target.hostname}:{target.port}: "
                           f"{err or type(err).__name__}") from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(5)
    return client, jumps


_NO_JUMP = object()


def _direct_tcpip(via: paramiko.SSHClient, target: SSHTarget, shown: str):
    try:
        return via.get_transport().open_channel("direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0))
    except (paramiko.SSHException, OSError) as err:
        raise ConnectError(f"{shown}: jump host cannot reach {target.hostname}:{target.port}: {err}") from None


class Transport:
    """Base: what the launcher needs from a host."""

    label: str
    shown: str
    is_local: bool = False

    def run(self, argv: list[str], timeout: Optional[float] = None, stdin: Optional[bytes] = None) -> ExecResult:
        raise NotImplementedError

    def check(self, argv: list[str], what: str, timeout: Optional[float] = None) -> ExecResult:
        res = self.run(argv, timeout=timeout)
        if not res.ok:
            raise RemoteError(f"{self.shown}: {what} failed: {res.err_line()}")
        return res

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        raise NotImplementedError

    def read_file(self, path: str) -> bytes:
        raise NotImplementedError

    def list_files(self, path: str) -> list[str]:
        raise NotImplementedError

    def makedirs(self, path: str) -> None:
        self.check(["mkdir", "-p", path], f"mkdir {path}")

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        pass


class SSHTransport(Transport):
    def __init__(self, ref: HostRef, spec: SSHSpec, config: Optional[paramiko.SSHConfig] = None):
        self.ref = ref
        self.label = ref.label
        self.shown = ref.text
        config = config or _ssh_config(spec)
        self.target = resolve_target(ref, spec, config)
        self.client, self._jumps = _connect_client(self.target, spec, config)
        self._sftp: Optional[paramiko.SFTPClient] = None
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return self.target.hostname

    def alive(self) -> bool:
        t = self.client.get_transport()
        return bool(t and t.is_active())

    def open_exec(self, argv: list[str]) -> paramiko.Channel:
        try:
            chan = self.client.get_transport().open_session()
            chan.exec_command(shlex.join(argv))
        except (paramiko.SSHException, OSError, AttributeError) as err:
            raise ConnectError(f"{self.shown}: connection lost ({err or type(err).__name__})") from None
        return chan

    def run(self, argv: list[str], timeout: Optional[float] = None, stdin: Optional[bytes] = None) -> ExecResult:
        chan = self.open_exec(argv)
        chan.settimeout(timeout)
        try:
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            err: list[bytes] = []
            reader = threading.Thread(target=lambda: err.append(chan.makefile_stderr("rb").read()), daemon=True)
            reader.start()
            out = chan.makefile("rb").read()
            reader.join()
            return ExecResult(chan.recv_exit_status(), out, b"".join(err))
        except socket.timeout:
            raise RemoteError(f"{self.shown}: {argv[0]} timed out after {timeout:g}s") from None
        finally:
            chan.close()

    def sftp(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is None:
                self._sftp = self.client.open_sftp()
            return self._sftp

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        sftp = self.sftp()
        # create with the final mode before any byte is written: a secret is never world-readable
        with sftp.open(path, "wb") as f:
            f.chmod(mode)
            f.write(data)

    def makedirs(self, path: str) -> None:
        """mkdir -p over SFTP: no remote shell to start."""
        sftp = self.sftp()
        parts = [p for p in path.split("/") if p]
        current = ""
        for part in parts:
            current += "/" + part
            try:
                sftp.stat(current)
            except FileNotFoundError:
                try:
                    sftp.mkdir(current)
                except OSError:
                    sftp.stat(current)  # created meanwhile by another node's thread; else this raises

    def put_file(self, local: str, remote: str, callback: Optional[Callable[[int, int], None]] = None) -> None:
        self.sftp().put(local, remote, callback=callback)

    def read_file(self, path: str) -> bytes:
        with self.sftp().open(path, "rb") as f:
            return f.read()

    def list_files(self, path: str) -> list[str]:
        try:
            return [a.filename for a in self.sftp().listdir_attr(path) if stat.S_ISREG(a.st_mode or 0)]
        except FileNotFoundError:
            return []

    def close(self) -> None:
        with self._lock:
            if self._sftp is not None:
                try:
                    self._sftp.close()
                except Exception:
                    pass
        self.client.close()
        for j in reversed(self._jumps):
            j.close()


class LocalTransport(Transport):
    """``transport: local``: this machine, no ssh."""

    is_local = True

    def __init__(self, ref: HostRef):
        self.ref = ref
        self.label = ref.label
        self.shown = ref.text
        self.address = "127.0.0.1"

    def run(self, argv: list[str], timeout: Optional[float] = None, stdin: Optional[bytes] = None) -> ExecResult:
        try:
            p = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
        except FileNotFoundError:
            return ExecResult(127, b"", f"{argv[0]}: command not found".encode())
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.shown}: {argv[0]} timed out after {timeout:g}s") from None
        return ExecResult(p.returncode, p.stdout, p.stderr)

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)

    def read_file(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def list_files(self, path: str) -> list[str]:
        p = Path(path)
        return sorted(x.name for x in p.iterdir() if x.is_file()) if p.is_dir() else []

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)


def resolve_master_addr(spec) -> str:
    """The address ranks rendezvous at: distributed.master_addr, else host 0's HostName from ssh_config."""
    if spec.distributed.master_addr or spec.transport == "local":
        return spec.master_addr
    return resolve_target(spec.host_refs[0], spec.ssh).hostname


def connect(ref: HostRef, transport: str, spec: SSHSpec, config: Optional[paramiko.SSHConfig] = None) -> Transport:
    if transport == "local":
        return LocalTransport(ref)
    return SSHTransport(ref, spec, config)
