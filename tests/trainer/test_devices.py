"""Device selection is pure: the MLU and DCU branches are checked here with fakes."""
import sys
import types

import pytest

from trainer.devices import SystemProbe, select_device, set_async_error_handling
from trainer.errors import UserError


class FakeProbe:
    def __init__(self, mlu=None, cuda=None):
        self._mlu, self._cuda = mlu, cuda
        self.calls = []

    def mlu(self):
        self.calls.append("mlu")
        return self._mlu

    def cuda(self):
        self.calls.append("cuda")
        return self._cuda


def test_auto_prefers_mlu_and_uses_cncl():
    d = select_device("auto", 3, 8, FakeProbe(mlu=("torch.mlu", 8), cuda=("cuda", 8)))
    assert (d.kind, d.type, d.backend, d.api, d.index, d.torch_device) == (
        "mlu", "mlu", "cncl", "torch.mlu", 3, "mlu:3")


def test_old_torch_mlu_api_is_reported():
    assert select_device("mlu", 0, 1, FakeProbe(mlu=("ct", 4))).api == "ct"


def test_auto_without_mlu_takes_cuda_then_cpu():
    assert select_device("auto", 1, 2, FakeProbe(cuda=("cuda", 2))).torch_device == "cuda:1"
    d = select_device("auto", 0, 2, FakeProbe())
    assert (d.kind, d.backend, d.index) == ("cpu", "gloo", None)


def test_rocm_build_is_dcu_over_nccl():
    d = select_device("auto", 0, 1, FakeProbe(cuda=("dcu", 4)))
    assert (d.kind, d.type, d.backend) == ("dcu", "cuda", "nccl")


def test_cuda_and_cpu_requests_never_probe_mlu():
    p = FakeProbe(mlu=("torch.mlu", 8), cuda=("cuda", 1))
    assert select_device("cuda", 0, 1, p).kind == "cuda"
    assert select_device("cpu", 0, 4, p).kind == "cpu"
    assert "mlu" not in p.calls


def test_mlu_requested_but_missing_is_one_line():
    with pytest.raises(UserError, match="torch_mlu is not installed"):
        select_device("mlu", 0, 1, FakeProbe(cuda=("cuda", 1)))


def test_cuda_requested_but_missing():
    with pytest.raises(UserError, match="torch.cuda.is_available"):
        select_device("cuda", 0, 1, FakeProbe())


@pytest.mark.parametrize("found", [("torch.mlu", 2), ("cuda", 2)])
def test_more_processes_than_devices(found):
    p = FakeProbe(mlu=found) if found[0] == "torch.mlu" else FakeProbe(cuda=found)
    with pytest.raises(UserError, match="4 processes on this node but only 2"):
        select_device("auto", 3, 4, p)


def test_cpu_has_no_process_limit():
    assert select_device("cpu", 15, 16, FakeProbe()).kind == "cpu"


def test_system_probe_without_torch_mlu_does_not_import_it():
    imported = []
    probe = SystemProbe(find_spec=lambda name: None, import_module=imported.append)
    assert probe.mlu() is None and imported == []


def test_system_probe_old_api(monkeypatch):
    """torch_mlu present, torch.mlu absent: falls back to torch_mlu.core.mlu_model."""
    import torch

    monkeypatch.delattr(torch, "mlu", raising=False)
    ct = types.SimpleNamespace(device_count=lambda: 8)
    mods = {"torch_mlu": types.SimpleNamespace(), "torch_mlu.core.mlu_model": ct}
    probe = SystemProbe(find_spec=lambda name: object(), import_module=mods.__getitem__)
    assert probe.mlu() == ("ct", 8)


def test_system_probe_new_api(monkeypatch):
    import torch

    monkeypatch.setattr(torch, "mlu", types.SimpleNamespace(device_count=lambda: 16),
                        raising=False)
    probe = SystemProbe(find_spec=lambda name: object(), import_module=lambda name: None)
    assert probe.mlu() == ("torch.mlu", 16)


def test_async_error_handling_is_set_but_not_overridden():
    env = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "3"}
    set_async_error_handling(env)
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "3"
    assert env["TORCH_CNCL_ASYNC_ERROR_HANDLING"] == "1"


def test_real_probe_on_this_machine_does_not_load_torch_mlu():
    select_device("cpu", 0, 1, SystemProbe())
    assert "torch_mlu" not in sys.modules
