"""The Docker Engine API (docker SDK) over a Transport. Nothing else talks to a daemon.

Over ssh the SDK's own paramiko adapter is given our already-connected, host-key-verified client, so one
SSH configuration (keys, known_hosts, jump hosts) governs the API too; each HTTP connection is a channel
running ``docker system dial-stdio`` on the host, as Docker's own ssh:// transport does.
``docker==7.1.0`` is pinned because ``_create_paramiko_client``/``_connect`` are private (tests cover it).
"""
from __future__ import annotations

import os
from typing import Optional

import docker
from docker.transport.sshconn import SSHHTTPAdapter

from .errors import RemoteError
from .plan import LABEL_RUN, LABEL_JOB, NodePlan, Plan
from .transport import SSHTransport, Transport

API_VERSION = "1.41"  # Engine 20.10 and newer; explicit, so no request is made before the adapter is mounted


class _ClientAdapter(SSHHTTPAdapter):
    def __init__(self, client, timeout, max_pool_size=16):
        self._given = client
        super().__init__("ssh://orchestrate", timeout=timeout, max_pool_size=max_pool_size)

    def _create_paramiko_client(self, base_url):
        self.ssh_client = self._given
        self.ssh_params = {}

    def _connect(self):
        pass  # already connected (and verified) by transport.py


def docker_client(t: Transport, timeout: Optional[float] = 60) -> docker.DockerClient:
    """A DockerClient for that host. ``timeout=None`` for calls that block for a run's lifetime (wait, logs)."""
    if isinstance(t, SSHTransport):
        client = docker.DockerClient(base_url=f"ssh://{t.target.hostname}", version=API_VERSION,
                                     use_ssh_client=True, timeout=timeout)
        client.api.mount("http+docker://ssh", _ClientAdapter(t.client, timeout))
        return client
    base = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return docker.DockerClient(base_url=base, version=API_VERSION, timeout=timeout)


def run_filters(run_id: Optional[str] = None, job: Optional[str] = None) -> dict:
    labels = [f"{LABEL_RUN}={run_id}" if run_id else LABEL_RUN]
    if job:
        labels.append(f"{LABEL_JOB}={job}")
    return {"label": labels}


def find_containers(client: docker.DockerClient, run_id: Optional[str] = None, job: Optional[str] = None):
    return client.containers.list(all=True, filters=run_filters(run_id, job))


def create_node(client: docker.DockerClient, plan: Plan, node: NodePlan):
    c = plan.spec.container
    try:
        return client.containers.create(
            plan.image, command=node.argv, entrypoint=node.entrypoint, name=node.container_name,
            labels=node.labels, environment=[f"{k}={v}" for k, v in node.env.items()],
            network_mode=c.network, ipc_mode=c.ipc, shm_size=c.shm_size, privileged=c.privileged,
            devices=node.devices or None, volumes=[m.docker_arg() for m in node.mounts],
            working_dir=c.workdir, init=True, detach=True,
        )
    except docker.errors.APIError as err:
        raise RemoteError(f"{node.host.text}: cannot create container {node.container_name}: "
                          f"{err.explanation or err}") from None


def stop_and_remove(client: docker.DockerClient, container, grace: float) -> None:
    """SIGTERM, SIGKILL after ``grace`` seconds (the daemon does both), then remove. Idempotent."""
    try:
        container.reload()
        if container.status in ("running", "restarting", "paused"):
            container.stop(timeout=int(round(grace)))
    except docker.errors.NotFound:
        return
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
