"""A running node, whatever runs it: a container on a host, or a local process (``runtime: process``).

The launcher only sees ``NodeHandle``: stream its output, wait for its exit code, stop it, remove it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Iterator, Optional

import docker

from .docker_api import stop_and_remove
from .plan import NodePlan


class NodeHandle:
    node: NodePlan

    def output(self) -> Iterator[bytes]:
        raise NotImplementedError

    def wait(self) -> int:
        raise NotImplementedError

    def stop(self, grace: float) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        pass

    def full_log(self) -> Optional[bytes]:
        """Everything the node printed, when it can be re-read (containers); None otherwise."""
        return None


class ContainerNode(NodeHandle):
    def __init__(self, node: NodePlan, api_client: docker.DockerClient, stream_client: docker.DockerClient,
                 container_id: str):
        self.node = node
        self.api = api_client
        self.stream = stream_client
        self.id = container_id

    def output(self) -> Iterator[bytes]:
        yield from self.stream.api.logs(self.id, stream=True, follow=True, stdout=True, stderr=True)

    def wait(self) -> int:
        return int(self.stream.api.wait(self.id)["StatusCode"])

    def stop(self, grace: float) -> None:
        try:
            self.api.api.stop(self.id, timeout=int(round(grace)))
        except docker.errors.NotFound:
            pass

    def remove(self) -> None:
        try:
            stop_and_remove(self.api, self.api.containers.get(self.id), 0)
        except docker.errors.NotFound:
            pass

    def full_log(self) -> Optional[bytes]:
        try:
            return self.api.api.logs(self.id, stdout=True, stderr=True)
        except docker.errors.NotFound:
            return None


class ProcessNode(NodeHandle):
    """A node as a process group on this machine: SIGTERM to the group, SIGKILL after the grace period."""

    def __init__(self, node: NodePlan, extra_env: dict[str, str]):
        self.node = node
        env = dict(os.environ)
        env.update(node.env)
        env.update(extra_env)
        os.makedirs(node.output_dir, exist_ok=True)
        self.proc = subprocess.Popen(
            node.full_command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=node.output_dir,
        )
        self._lock = threading.Lock()

    def output(self) -> Iterator[bytes]:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(65536):
            yield chunk

    def wait(self) -> int:
        return self.proc.wait()

    def stop(self, grace: float) -> None:
        with self._lock:
            if self.proc.poll() is not None:
                return
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.1)
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
