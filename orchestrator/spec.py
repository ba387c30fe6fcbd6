"""The job file: one YAML document -> a validated ``JobSpec``.

Errors name the file, the line and the key (``jobs/x.yaml:7 hosts[1]: ...``). String values may use
``${NAME}`` / ``${NAME:-default}`` from the controller's environment (``$$`` is a literal ``$``);
``${JOB_DIR}`` is the absolute directory of the job file unless the environment sets it.
"""
from __future__ import annotations

import ipaddress
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import SpecError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HOST_RE = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
    r"(?P<address>[A-Za-z0-9_][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?$"
)
SIZE_RE = re.compile(r"^[0-9]+(\.[0-9]+)?\s*([bkmgt]|kb|mb|gb|tb)?$", re.IGNORECASE)
SHA256_RE = re.compile(r"^(sha256:)?[0-9a-f]{64}$")
INTERP_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# Set by the tool in every container; a job may not set them itself.
RESERVED_ENV = frozenset(
    {"NODE_RANK", "NNODES", "NPROC_PER_NODE", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE",
     "ORCHESTRATE_RUN_ID", "ORCHESTRATE_JOB", "ORCHESTRATE_OUTPUT_DIR", "ORCHESTRATE_ATTEMPT",
     "ORCHESTRATE_DEVICE_KIND", "ORCHESTRATE_SHM_KB"}
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class HostRef:
    """One entry of ``hosts:`` as written: ``[user@]address[:port]`` or an ssh_config alias."""

    text: str
    user: Optional[str]
    address: str
    port: Optional[int]

    @classmethod
    def parse(cls, text: str) -> "HostRef":
        m = HOST_RE.match(text)
        if not m:
            raise ValueError(f"{text!r} is not [user@]address[:port] (letters, digits, '.', '_', '-')")
        port = int(m["port"]) if m["port"] else None
        if port is not None and not 1 <= port <= 65535:
            raise ValueError(f"port {port} out of range 1-65535")
        return cls(text=text, user=m["user"], address=m["address"].strip("[]"), port=port)

    @property
    def label(self) -> str:
        """The name used in container names, log file names and prefixes."""
        return self.address


class SSHSpec(_Model):
    identity_file: Optional[str] = None
    known_hosts: Optional[str] = None
    host_key_policy: Literal["reject", "accept-new"] = "reject"
    connect_timeout: float = Field(10.0, gt=0, le=600)
    config_file: Optional[str] = None


class ImageSpec(_Model):
    name: str
    tarball: Optional[str] = None
    location: Literal["host", "controller"] = "host"
    sha256: Optional[str] = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$", v):
            raise ValueError(f"{v!r} is not an image reference")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        v = v.lower()
        if not SHA256_RE.match(v):
            raise ValueError("must be 64 hex digits (optionally prefixed sha256:)")
        return v.removeprefix("sha256:")

    @field_validator("tarball")
    @classmethod
    def _tarball(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            _check_path(v, "tarball")
        return v


class Volume(_Model):
    source: str
    target: str
    mode: Literal["ro", "rw"] = "rw"

    @classmethod
    def parse(cls, text: str) -> "Volume":
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"{text!r} is not SOURCE:TARGET[:ro|rw]")
        source, target = parts[0], parts[1]
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise ValueError(f"{text!r}: mode must be ro or rw, not {mode!r}")
        for p in (source, target):
            if not p.startswith("/"):
                raise ValueError(f"{text!r}: {p!r} must be an absolute path")
            _check_path(p, "volume")
        return cls(source=posixpath.normpath(source), target=posixpath.normpath(target), mode=mode)

    def __str__(self) -> str:
        return f"{self.source}:{self.target}:{self.mode}"


class ContainerSpec(_Model):
    shm_size: str = "8g"
    network: Literal["host", "bridge", "none"] = "host"
    ipc: Literal["host", "private", "shareable"] = "host"
    privileged: bool = False
    devices: Union[Literal["auto"], list[str]] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)
    workdir: Optional[str] = None
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: list[str] = Field(default_factory=list)

    @field_validator("shm_size")
    @classmethod
    def _shm(cls, v: str) -> str:
        if not SIZE_RE.match(str(v)):
            raise ValueError(f"{v!r} is not a size like 100g, 512m")
        return str(v).replace(" ", "").lower()

    @field_validator("volumes", mode="before")
    @classmethod
    def _volumes(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        out = []
        for i, x in enumerate(v):
            try:
                out.append(Volume.parse(x) if isinstance(x, str) else x)
            except ValueError as err:
                raise _At(("container", "volumes", i), str(err)) from None
        return out

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: Any) -> Any:
        if isinstance(v, list):
            for i, d in enumerate(v):
                host_path = d.split(":")[0]
                if not host_path.startswith("/dev/") or any(c in d for c in "\x00\n\r"):
                    raise _At(("container", "devices", i),
                              f"{d!r}: a device is a path under /dev/ (HOST[:CONTAINER[:rwm]])")
        return v

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            if not v.startswith("/"):
                raise ValueError("must be an absolute path")
            _check_path(v, "workdir")
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _env_values(cls, v: Any) -> Any:
        # YAML turns `OMP_NUM_THREADS: 4` into an int; environment values are strings.
        if isinstance(v, dict):
            return {k: (str(x).lower() if isinstance(x, bool) else str(x)) if isinstance(x, (int, float, bool)) else x
                    for k, x in v.items()}
        return v

    @model_validator(mode="after")
    def _env_keys(self) -> "ContainerSpec":
        for key in list(self.env) + list(self.secret_env):
            if not ENV_KEY_RE.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if key in RESERVED_ENV:
                raise ValueError(f"{key} is set by orchestrate for every node; remove it from the job")
        for key, value in self.env.items():
            if "\x00" in value:
                raise ValueError(f"env {key}: NUL byte in value")
        both = sorted(set(self.env) & set(self.secret_env))
        if both:
            raise ValueError(f"{', '.join(both)} is in both env and secret_env")
        return self


class DistributedSpec(_Model):
    nproc_per_node: int = Field(1, ge=1, le=1024)
    master_port: int = Field(29500, ge=1, le=65535)
    master_addr: Optional[str] = None
    launcher: Literal["torchrun", "none"] = "torchrun"

    @field_validator("master_addr")
    @classmethod
    def _addr(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        try:
            ipaddress.ip_address(v)
        except ValueError:
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9.-]*$", v):
                raise ValueError(f"{v!r} is neither an IP address nor a host name") from None
        return v


class FaultsSpec(_Model):
    stop_grace: float = Field(10.0, ge=0, le=3600)
    lost_host_timeout: float = Field(30.0, gt=0, le=86400)
    rendezvous_timeout: Optional[float] = Field(None, gt=0)
    first_step_timeout: Optional[float] = Field(None, gt=0)
    stall_timeout: Optional[float] = Field(None, gt=0)
    max_restarts: int = Field(0, ge=0, le=100)


class JobSpec(_Model):
    name: str
    hosts: list[str] = Field(min_length=1)
    transport: Literal["ssh", "local"] = "ssh"
    runtime: Literal["docker", "process"] = "docker"
    device: Literal["cpu", "cuda", "mlu", "dcu"] = "cpu"
    host_dir: str = "/var/lib/orchestrate"
    ssh: SSHSpec = Field(default_factory=SSHSpec)
    image: Optional[ImageSpec] = None
    container: ContainerSpec = Field(default_factory=ContainerSpec)
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)
    faults: FaultsSpec = Field(default_factory=FaultsSpec)
    setup: list[str] = Field(default_factory=list)
    command: list[str] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r}: a job name is 1-63 of [a-z0-9_.-], starting with a letter or digit")
        return v

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for i, h in enumerate(v):
            try:
                HostRef.parse(h)
            except ValueError as err:
                raise _At(("hosts", i), str(err)) from None
        return v

    @field_validator("host_dir")
    @classmethod
    def _host_dir(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must be an absolute path")
        _check_path(v, "host_dir")
        return posixpath.normpath(v)

    @field_validator("command", "setup")
    @classmethod
    def _no_nul(cls, v: list[str]) -> list[str]:
        for item in v:
            if "\x00" in item:
                raise ValueError("NUL byte in command")
        return v

    @model_validator(mode="after")
    def _cross(self) -> "JobSpec":
        refs = [HostRef.parse(h) for h in self.hosts]
        seen: dict[tuple, int] = {}
        for i, r in enumerate(refs):
            key = (r.user, r.address.lower(), r.port)
            if key in seen:
                raise _At(("hosts", i), f"duplicate host {r.text!r} (same as hosts[{seen[key]}])")
            seen[key] = i
        labels = [r.label.lower() for r in refs]
        if len(set(labels)) != len(labels):
            raise _At(("hosts",), "two hosts share an address; each node needs its own host")
        if self.runtime == "process" and self.transport != "local":
            raise _At(("runtime",), "runtime: process runs nodes as local processes; it needs transport: local")
        if self.runtime == "docker" and self.image is None:
            raise _At(("image",), "runtime: docker needs an image (image.name)")
        return self

    @property
    def host_refs(self) -> list[HostRef]:
        return [HostRef.parse(h) for h in self.hosts]

    @property
    def nnodes(self) -> int:
        return len(self.hosts)

    @property
    def world_size(self) -> int:
        return self.nnodes * self.distributed.nproc_per_node

    @property
    def master_addr(self) -> str:
        if self.distributed.master_addr:
            return self.distributed.master_addr
        if self.transport == "local":
            return "127.0.0.1"
        return self.host_refs[0].address


class _At(ValueError):
    """A cross-field error that knows which key it is about."""

    def __init__(self, loc: tuple, msg: str):
        super().__init__(msg)
        self.loc = loc


def _check_path(p: str, what: str) -> None:
    if any(c in p for c in "\x00\n\r"):
        raise ValueError(f"{what} path contains a control character")


# --------------------------------------------------------------------------------------------- loading


class _LineLoader(yaml.SafeLoader):
    pass


def _compose(path: str, text: str) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML keeping the line of every key and item: ({...}, {("hosts", 1): 7, ...})."""
    try:
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(f"{path}{line}: not valid YAML: {problem}") from None
    lines: dict[tuple, int] = {}
    if node is None:
        raise SpecError(f"{path}: the job file is empty")

    def build(n: yaml.Node, loc: tuple) -> Any:
        lines.setdefault(loc, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in n.value:
                key = k.value
                if key in out:
                    raise SpecError(f"{path}:{k.start_mark.line + 1} {_fmt_loc(loc + (key,))}: duplicate key")
                lines[loc + (key,)] = k.start_mark.line + 1
                out[key] = build(v, loc + (key,))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(v, loc + (i,)) for i, v in enumerate(n.value)]
        loader = _LineLoader("")
        try:
            return loader.construct_object(n, deep=True)
        finally:
            loader.dispose()

    return build(node, ()), lines


def _interpolate(value: Any, loc: tuple, env: dict[str, str], path: str, lines: dict[tuple, int]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, loc + (k,), env, path, lines) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, loc + (i,), env, path, lines) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise SpecError(f"{path}:{_line_of(lines, loc)} {_fmt_loc(loc)}: ${{{name}}} is not set in the environment "
                        f"(use ${{{name}:-default}} for a default)")

    return INTERP_RE.sub(sub, value)


def _fmt_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _line_of(lines: dict[tuple, int], loc: tuple) -> int:
    loc = tuple(loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def load_job(path: str | os.PathLike, environ: dict[str, str] | None = None) -> JobSpec:
    """Read and validate a job file; every problem is a ``SpecError`` naming file:line key."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{shown}: no such job file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{shown}: cannot read the job file ({err})") from None
    return parse_job(text, shown, environ, job_dir=str(Path(path).resolve().parent))


def parse_job(text: str, path: str = "<job>", environ: dict[str, str] | None = None,
              job_dir: str | None = None) -> JobSpec:
    data, lines = _compose(path, text)
    if not isinstance(data, dict):
        raise SpecError(f"{path}:1: the job file must be a mapping of keys (name:, hosts:, command: ...)")
    env = dict(os.environ if environ is None else environ)
    if job_dir is not None:
        env.setdefault("JOB_DIR", job_dir)
    data = _interpolate(data, (), env, path, lines)
    try:
        return JobSpec.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        msg = first["msg"]
        ctx_err = (first.get("ctx") or {}).get("error")
        if isinstance(ctx_err, _At):
            loc, msg = ctx_err.loc, str(ctx_err)
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if first["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}" + _suggest(loc, data)
        elif first["type"] == "missing":
            msg = "required key is missing"
        elif first["type"] == "literal_error":
            msg = f"{msg} (got {first.get('input')!r})"
        # pydantic puts the union branch name into the location; users never wrote it
        loc = tuple(p for p in loc if p not in ("list[str]", "literal['auto']", "function-after[_volumes(), list[Volume]]"))
        more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
        raise SpecError(f"{path}:{_line_of(lines, loc)} {_fmt_loc(loc)}: {msg}{more}") from None


def _suggest(loc: tuple, data: dict) -> str:
    import difflib

    parent: Any = JobSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(parent, "model_fields", {}).get(part)
        parent = field.annotation if field is not None else None
        if parent is None:
            return ""
    names = list(getattr(parent, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(names)}"
