"""The image on every host, by content: read the image id from the tarball itself, load only where the
daemon lacks that id, check the tarball's sha256 on the side that reads it."""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import docker

from .errors import ImageError
from .spec import ImageSpec
from .transport import Transport

CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageIdentity:
    id: str                 # sha256:<hex> of the image config: what `docker image inspect` calls Id
    tags: tuple[str, ...]


def identity_from_manifest(raw: bytes, where: str) -> ImageIdentity:
    try:
        manifest = json.loads(raw)
        entry = manifest[0]
        config = entry["Config"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ImageError(f"{where}: manifest.json in the tarball is not a docker image manifest") from None
    digest = os.path.basename(config).removesuffix(".json")
    return ImageIdentity(id=f"sha256:{digest}", tags=tuple(entry.get("RepoTags") or ()))


def read_identity_local(path: str) -> ImageIdentity:
    """Stream the tarball (plain or gzip) once, without unpacking, until manifest.json."""
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if member.name.lstrip("./") == "manifest.json":
                    f = tar.extractfile(member)
                    return identity_from_manifest(f.read() if f else b"", path)
    except FileNotFoundError:
        raise ImageError(f"{path}: image tarball not found on the controller") from None
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ImageError(f"{path}: image tarball is corrupt or truncated ({err})") from None
    raise ImageError(f"{path}: no manifest.json in the tarball: not made by `docker save`")


def read_identity_remote(t: Transport, path: str, cache_dir: Optional[str] = None) -> ImageIdentity:
    """The tarball's image id, read on the host. Finding manifest.json means reading (and, for gzip,
    decompressing) the whole file, minutes for a 20 GB image, so the answer is cached on the host in
    ``<cache_dir>/image-ids.json``, keyed by the file's path, size, mtime, ctime and inode."""
    st = t.run(["stat", "-L", "-c", "%s %Y %Z %i", path])
    if not st.ok:
        raise ImageError(f"{t.shown}: image tarball {path} not found on this host")
    stamp = st.text().strip()
    cache_file = f"{cache_dir}/image-ids.json" if cache_dir else None
    cache: dict = {}
    if cache_file:
        try:
            cache = json.loads(t.read_file(cache_file))
        except (OSError, ValueError):
            cache = {}
        hit = cache.get(path) if isinstance(cache, dict) else None
        if isinstance(hit, dict) and hit.get("stat") == stamp and str(hit.get("id", "")).startswith("sha256:"):
            return ImageIdentity(hit["id"], tuple(hit.get("tags") or ()))
    res = t.run(["tar", "-xOf", path, "manifest.json"])
    if not res.ok:
        raise ImageError(f"{t.shown}: image tarball {path} is corrupt or truncated ({res.err_line()})")
    ident = identity_from_manifest(res.stdout, f"{t.shown}:{path}")
    if cache_file:
        try:
            t.makedirs(cache_dir)
            cache = cache if isinstance(cache, dict) else {}
            cache[path] = {"stat": stamp, "id": ident.id, "tags": list(ident.tags)}
            t.write_file(cache_file, json.dumps(cache, indent=1).encode(), 0o644)
        except Exception:  # noqa: BLE001 - a cache that cannot be written only costs time next run
            pass
    return ident


def sha256_local(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def sha256_remote(t: Transport, path: str) -> str:
    res = t.run(["sha256sum", path])
    if not res.ok:
        raise ImageError(f"{t.shown}: cannot checksum {path}: {res.err_line()}")
    return res.text().split()[0]


def has_image(client: docker.DockerClient, image_id: str) -> bool:
    try:
        client.images.get(image_id)
        return True
    except docker.errors.ImageNotFound:
        return False


def _ensure_tag(client: docker.DockerClient, image_id: str, name: str) -> None:
    img = client.images.get(image_id)
    if name not in img.tags:
        repo, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
        img.tag(repo, tag or "latest")


@dataclass
class EnsureResult:
    host: str
    image_id: str
    loaded: bool
    bytes_moved: int


def ensure_image(t: Transport, client: docker.DockerClient, spec: ImageSpec,
                 local_identity: Optional[ImageIdentity] = None,
                 progress: Optional[Callable[[int, int], None]] = None,
                 note: Optional[Callable[[str], None]] = None, cache_dir: Optional[str] = None) -> EnsureResult:
    """Make sure ``spec`` is on this host. Loads nothing and moves no bytes when the id is already there."""
    if not spec.tarball:
        try:
            img = client.images.get(spec.name)
        except docker.errors.ImageNotFound:
            raise ImageError(f"{t.shown}: image {spec.name} is not on this host and the job names no "
                             "image.tarball to load it from") from None
        return EnsureResult(t.shown, img.id, False, 0)

    if spec.location == "host":
        ident = read_identity_remote(t, spec.tarball, cache_dir)
        if has_image(client, ident.id):
            _ensure_tag(client, ident.id, spec.name)
            return EnsureResult(t.shown, ident.id, False, 0)
        if spec.sha256:
            got = sha256_remote(t, spec.tarball)
            if got != spec.sha256:
                raise ImageError(f"{t.shown}: {spec.tarball} sha256 is {got}, the job expects {spec.sha256}")
        if note:
            note(f"loading {spec.tarball} on the host")
        res = t.run(["docker", "load", "-q", "-i", spec.tarball])
        if not res.ok:
            raise ImageError(f"{t.shown}: docker load -i {spec.tarball} failed: {res.err_line()}")
        moved = 0
    else:
        ident = local_identity or read_identity_local(spec.tarball)
        if has_image(client, ident.id):
            _ensure_tag(client, ident.id, spec.name)
            return EnsureResult(t.shown, ident.id, False, 0)
        size = os.path.getsize(spec.tarball)
        if note:
            note(f"sending {spec.tarball} into the daemon")
        sent = [0]

        def chunks() -> Iterator[bytes]:
            with open(spec.tarball, "rb") as f:
                while block := f.read(CHUNK):
                    sent[0] += len(block)
                    if progress:
                        progress(sent[0], size)
                    yield block

        try:
            for _ in client.api.load_image(chunks()):
                pass
        except docker.errors.APIError as err:
            raise ImageError(f"{t.shown}: loading {spec.tarball} into the daemon failed: "
                             f"{err.explanation or err}") from None
        moved = sent[0]
    if not has_image(client, ident.id):
        raise ImageError(f"{t.shown}: after loading, image {ident.id[:19]} is still missing (tarball corrupt?)")
    _ensure_tag(client, ident.id, spec.name)
    return EnsureResult(t.shown, ident.id, True, moved)


def save_image(name: str, output: str) -> tuple[str, str, int]:
    """`docker save NAME | gzip` into OUTPUT atomically; returns (sha256 of the file, image id, bytes)."""
    import gzip
    import tempfile

    client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
                                 version="1.41")
    try:
        img = client.images.get(name)
    except docker.errors.ImageNotFound:
        raise ImageError(f"image {name} is not in the local daemon") from None
    except docker.errors.DockerException as err:
        raise ImageError(f"cannot reach the local Docker daemon: {err}") from None
    out_dir = os.path.dirname(os.path.abspath(output))
    h = hashlib.sha256()

    class _Hashing:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            h.update(b)
            return self.f.write(b)

        def flush(self):
            self.f.flush()

    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".save.")
    try:
        with os.fdopen(fd, "wb") as raw:
            sink = _Hashing(raw)
            zipped = output.endswith((".gz", ".tgz"))
            target = gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=1) if zipped else sink
            for chunk in client.api.get_image(img.id if not img.tags else name):
                target.write(chunk)
            if zipped:
                target.close()
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    digest = h.hexdigest()
    with open(output + ".sha256", "w") as f:
        f.write(f"{digest}  {os.path.basename(output)}\n")
    return digest, img.id, os.path.getsize(output)
