"""Look at, and poke, the hosts that ``tests/testbed/testbed.sh up`` started.

Tests use this to see what is on the hosts (through each host's own Docker
socket and its own /var/lib/orchestrate), and to break hosts on purpose
(stop sshd or dockerd, unplug the network). The orchestrator under test never
uses this module: it reaches the hosts over SSH like any other hosts.

    tb = Testbed.load()              # raises TestbedNotUp with the reason
    tb1 = tb.host("tb1")
    tb.docker_client(tb1).containers.list()
    (tb1.lib_path("images/testbed-cpu.tar.gz")).exists()
    tb.stop_sshd("tb2"); ...; tb.start_sshd("tb2")
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

DEFAULT_DIR = "/var/tmp/orchestrate-testbed"
SCRIPT = Path(__file__).resolve().with_name("testbed.sh")
IMAGE_NAME = "orchestrate/testbed-cpu:1"
HOST_LIB = "/var/lib/orchestrate"
#: Where every host finds the image tarball, as seen on that host.
HOST_IMAGE_PATH = f"{HOST_LIB}/images/testbed-cpu.tar.gz"


class TestbedNotUp(RuntimeError):
    """The state dir says the testbed is not (completely) up."""


@dataclass(frozen=True)
class Host:
    name: str  # tb1, tb2, ... (also its alias in ssh_config and known_hosts)
    address: str  # 10.213.0.11, ...
    netns: str  # otb1, ...
    ifname: str  # the veth inside the netns (eth0): GLOO_SOCKET_IFNAME
    docker_sock: str  # that host's dockerd, reachable from the controller
    lib_dir: str  # controller-side path of the host's /var/lib/orchestrate
    host_dir: str  # the host's state: logs, pid files, sshd_config
    host_key: tuple[str, str]  # ("ssh-ed25519", base64)

    @property
    def docker_url(self) -> str:
        return f"unix://{self.docker_sock}"

    def lib_path(self, relative: str = "") -> Path:
        """The controller-side path of ``/var/lib/orchestrate/<relative>`` on this host."""
        rel = relative[len(HOST_LIB) :] if relative.startswith(HOST_LIB) else relative
        return Path(self.lib_dir) / rel.lstrip("/")

    def log_path(self, daemon: str) -> Path:
        """``dockerd``, ``sshd`` or ``holder``: that daemon's log on the controller."""
        return Path(self.host_dir) / f"{daemon}.log"


class Testbed:
    """The testbed as recorded in its state dir (see docs/testbed.md)."""

    def __init__(self, state_dir: str | os.PathLike, hosts: Sequence[Host]):
        self.state_dir = Path(state_dir)
        self.hosts: list[Host] = list(hosts)

    # ------------------------------------------------------------ loading
    @classmethod
    def default_dir(cls) -> Path:
        return Path(os.environ.get("ORCHESTRATE_TESTBED_DIR", DEFAULT_DIR))

    @classmethod
    def load(cls, state_dir: str | os.PathLike | None = None, *, check: bool = True) -> "Testbed":
        """Read ``hosts.json``; with ``check``, also require every sshd and dockerd alive."""
        state = Path(state_dir) if state_dir is not None else cls.default_dir()
        if not (state / "up.done").is_file():
            raise TestbedNotUp(f"no completed `testbed.sh up` in {state} (missing up.done)")
        try:
            raw = json.loads((state / "hosts.json").read_text())
        except (OSError, ValueError) as e:
            raise TestbedNotUp(f"cannot read {state}/hosts.json: {e}") from e
        hosts = [
            Host(
                name=h["name"],
                address=h["address"],
                netns=h["netns"],
                ifname=h["ifname"],
                docker_sock=h["docker_sock"],
                lib_dir=h["lib_dir"],
                host_dir=h.get("host_dir", str(Path(h["docker_sock"]).parent)),
                host_key=tuple(h["host_key"]),
            )
            for h in raw
        ]
        tb = cls(state, hosts)
        if check:
            down = [f"{h.name}: {what}" for h in hosts for what in tb._dead(h)]
            if down:
                raise TestbedNotUp("not healthy: " + "; ".join(down))
        return tb

    def _dead(self, host: Host) -> list[str]:
        dead = []
        for daemon in ("holder", "dockerd", "sshd"):
            if self.pid(host, daemon) is None:
                dead.append(f"{daemon} not running")
        if not Path(host.docker_sock).exists():
            dead.append(f"no {host.docker_sock}")
        return dead

    # ------------------------------------------------------------ lookup
    def host(self, name_or_address: str | Host) -> Host:
        if isinstance(name_or_address, Host):
            return name_or_address
        for h in self.hosts:
            if name_or_address in (h.name, h.address):
                return h
        raise KeyError(f"no testbed host {name_or_address!r} (have {[h.name for h in self.hosts]})")

    __getitem__ = host

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def pid(self, host: str | Host, daemon: str) -> int | None:
        """The live pid of ``dockerd``, ``sshd`` or ``holder`` on host, or None."""
        h = self.host(host)
        exe = {"holder": "sleep"}.get(daemon, daemon)
        try:
            pid = int((Path(h.host_dir) / f"{daemon}.pid").read_text().strip())
            if os.readlink(f"/proc/{pid}/exe").rsplit("/", 1)[-1] != exe:
                return None
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            return None if state in ("Z", "X") else pid
        except (OSError, ValueError, IndexError):
            return None

    # ------------------------------------------------------------ files
    @property
    def ssh_config_path(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def known_hosts_path(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def identity_file(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def image_tarball(self) -> Path:
        return self.state_dir / "image.tar.gz"

    @property
    def image_sha256(self) -> str:
        return (self.state_dir / "image.tar.gz.sha256").read_text().split()[0]

    image_name = IMAGE_NAME
    host_image_path = HOST_IMAGE_PATH

    # ------------------------------------------------------------ talking to hosts
    def docker_client(self, host: str | Host):
        """docker SDK client on the host's own socket (not over ssh): for looking."""
        import docker  # the SDK is a dependency of the project, not of this module's import

        return docker.DockerClient(base_url=self.host(host).docker_url, timeout=60)

    def ssh_client(self, host: str | Host, timeout: float = 10.0):
        """A connected paramiko client to the host, its key checked against known_hosts."""
        import paramiko

        h = self.host(host)
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts_path))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            h.address,
            port=22,
            username="root",
            key_filename=str(self.identity_file),
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
        return client

    def ssh_run(self, host: str | Host, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
        """Run a shell command on the host over ssh: (exit status, stdout, stderr)."""
        client = self.ssh_client(host)
        try:
            _, out, err = client.exec_command(command, timeout=timeout)
            stdout, stderr = out.read().decode(), err.read().decode()
            return out.channel.recv_exit_status(), stdout, stderr
        finally:
            client.close()

    def exec(
        self, host: str | Host, argv: Sequence[str], *, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess:
        """Run argv inside the host's namespaces (not over ssh), DOCKER_HOST set."""
        return self._script("exec", self.host(host).name, *argv, check=check, timeout=timeout)

    # ------------------------------------------------------------ faults
    def stop_sshd(self, host: str | Host) -> None:
        """Stop the host's sshd listener (sessions already open keep running)."""
        self._script("stop-sshd", self.host(host).name)

    def start_sshd(self, host: str | Host) -> None:
        self._script("start-sshd", self.host(host).name)

    def stop_dockerd(self, host: str | Host) -> None:
        """Stop the host's dockerd; its containers are removed first."""
        self._script("stop-dockerd", self.host(host).name)

    def start_dockerd(self, host: str | Host) -> None:
        self._script("start-dockerd", self.host(host).name)

    def net_down(self, host: str | Host) -> None:
        """Unplug the host: its veth on the bridge goes down (nothing reaches it)."""
        self._script("net-down", self.host(host).name)

    def net_up(self, host: str | Host) -> None:
        self._script("net-up", self.host(host).name)

    def status(self) -> bool:
        return self._script("status", check=False).returncode == 0

    def snapshot(self) -> dict[str, dict[str, list[str]]]:
        """Per host: image tags and container names on its daemon right now."""
        seen = {}
        for h in self.hosts:
            client = self.docker_client(h)
            try:
                seen[h.name] = {
                    "images": sorted(t for img in client.images.list(all=True) for t in img.tags),
                    "containers": sorted(c.name for c in client.containers.list(all=True)),
                }
            finally:
                client.close()
        return seen

    # ------------------------------------------------------------ cleanup between tests
    def reset_host(self, host: str | Host, *, images: bool = True, lib: bool = False) -> None:
        """Back to how `up` left the host: no containers; no images (``images``);
        with ``lib``, /var/lib/orchestrate holds only the image tarball again."""
        h = self.host(host)
        client = self.docker_client(h)
        try:
            for c in client.containers.list(all=True):
                c.remove(force=True)
            if images:
                for img in client.images.list(all=True):
                    client.images.remove(img.id, force=True)
        finally:
            client.close()
        if lib:
            root = h.lib_path()
            for child in root.iterdir():
                if child.name != "images":
                    subprocess.run(["rm", "-rf", "--one-file-system", str(child)], check=True)
        self.restore_image_tarball(h)

    def restore_image_tarball(self, host: str | Host) -> None:
        """Put a fresh copy of the image tarball back if a test removed or changed it."""
        h = self.host(host)
        dest = h.lib_path(HOST_IMAGE_PATH)
        if dest.exists() and dest.stat().st_size == self.image_tarball.stat().st_size:
            if _sha256(dest) == self.image_sha256:
                return
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "--reflink=never", str(self.image_tarball), str(dest)], check=True)

    # ------------------------------------------------------------ internals
    def _script(self, *args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess:
        env = dict(os.environ, ORCHESTRATE_TESTBED_DIR=str(self.state_dir))
        proc = subprocess.run(
            [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"testbed.sh {shlex.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        return proc


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
