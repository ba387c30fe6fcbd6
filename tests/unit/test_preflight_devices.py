"""Device-node discovery per accelerator kind, on fake /dev listings (MLU and DCU hardware is not here)."""
import pytest

from orchestrator.preflight import discover_devices, parse_addr_dev, parse_route_dev

MLU_HOST = ["cambricon_dev0", "cambricon_dev1", "cambricon_dev10", "cambricon_ctl", "cambricon_ipcm0",
            "commu0", "cambr-msgq:0", "cambr-rpc:0", "cmsg_ctrl0", "cambricon_gdr", "null", "tty0"]


def test_mlu_cards_control_and_companion_nodes():
    count, nodes, missing = discover_devices("mlu", MLU_HOST, [])
    assert count == 3 and missing is None
    assert nodes[:4] == ["/dev/cambricon_dev0", "/dev/cambricon_dev1", "/dev/cambricon_dev10", "/dev/cambricon_ctl"]
    assert set(nodes[4:]) == {"/dev/cambricon_ipcm0", "/dev/commu0", "/dev/cambr-msgq:0", "/dev/cambr-rpc:0",
                              "/dev/cmsg_ctrl0", "/dev/cambricon_gdr"}
    assert "/dev/null" not in nodes


def test_mlu_without_control_node_is_reported():
    count, _, missing = discover_devices("mlu", ["cambricon_dev0"], [])
    assert count == 1 and missing == "/dev/cambricon_ctl"


def test_cuda_and_dcu():
    count, nodes, missing = discover_devices("cuda", ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvme0"], [])
    assert (count, missing) == (2, None)
    assert nodes == ["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    count, nodes, missing = discover_devices("dcu", ["kfd", "dri"], ["card0", "renderD128", "renderD129"])
    assert (count, missing) == (2, None) and nodes == ["/dev/kfd", "/dev/dri/renderD128", "/dev/dri/renderD129"]
    assert discover_devices("dcu", [], ["renderD128"])[2] == "/dev/kfd"


@pytest.mark.parametrize("kind", ["cuda", "mlu", "dcu"])
def test_no_devices_on_a_cpu_host(kind):
    assert discover_devices(kind, ["null", "zero", "tty"], [])[0] == 0


def test_route_interface():
    assert parse_route_dev("10.213.0.11 dev eth0 src 10.213.0.12 uid 0 \\    cache ") == "eth0"
    assert parse_route_dev("local 10.213.0.11 dev lo table local src 10.213.0.11") == "lo"
    assert parse_route_dev("RTNETLINK answers: Network is unreachable") is None


def test_interface_holding_the_master_address():
    text = "2: eth0@if7    inet 10.213.0.11/24 brd 10.213.0.255 scope global eth0\\       valid_lft forever"
    assert parse_addr_dev(text) == "eth0"
    assert parse_addr_dev("") is None
