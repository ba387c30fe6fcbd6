"""The image id comes from the tarball itself (manifest.json), streamed, plain or gzip."""
import gzip
import io
import json
import tarfile

import pytest

from orchestrator.errors import ImageError
from orchestrator.images import read_identity_local, sha256_local

CONFIG = "a" * 64


def make_save_tar(path, gz=False, manifest=True):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name, data: bytes):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("blobs/sha256/" + "b" * 64, b"x" * 5000)
        add(f"blobs/sha256/{CONFIG}", b"{}")
        if manifest:
            add("manifest.json", json.dumps([{"Config": f"blobs/sha256/{CONFIG}", "RepoTags": ["img:1"],
                                              "Layers": ["blobs/sha256/" + "b" * 64]}]).encode())
    data = buf.getvalue()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_identity_from_manifest(tmp_path, gz):
    ident = read_identity_local(str(make_save_tar(tmp_path / "i.tar", gz)))
    assert ident.id == f"sha256:{CONFIG}" and ident.tags == ("img:1",)


def test_truncated_and_missing(tmp_path):
    good = make_save_tar(tmp_path / "i.tar.gz", gz=True).read_bytes()
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        read_identity_local(str(bad))
    with pytest.raises(ImageError, match="not found on the controller"):
        read_identity_local(str(tmp_path / "nope.tar"))
    with pytest.raises(ImageError, match="no manifest.json"):
        read_identity_local(str(make_save_tar(tmp_path / "m.tar", manifest=False)))


def test_sha256(tmp_path):
    import hashlib

    p = make_save_tar(tmp_path / "i.tar")
    assert sha256_local(str(p)) == hashlib.sha256(p.read_bytes()).hexdigest()
