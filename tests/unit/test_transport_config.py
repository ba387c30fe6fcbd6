"""Host entries resolve through ssh_config the way OpenSSH does (HostName, User, Port, IdentityFile, jumps)."""
import paramiko

from orchestrator.spec import HostRef, SSHSpec
from orchestrator.transport import fingerprint, resolve_target

CONFIG = """
Host mlu-*
    User trainer
    IdentityFile ~/.ssh/id_mlu
    UserKnownHostsFile /etc/orch/known_hosts
Host mlu-master
    HostName 192.0.2.10
    Port 2222
    ProxyJump bastion
Host mlu-slave
    HostName 192.0.2.11
    ProxyCommand ssh -W %h:%p gateway
"""


def cfg():
    return paramiko.SSHConfig.from_text(CONFIG)


def test_alias_resolution():
    t = resolve_target(HostRef.parse("mlu-master"), SSHSpec(), cfg())
    assert (t.hostname, t.port, t.user, t.proxy_jump) == ("192.0.2.10", 2222, "trainer", "bastion")
    assert t.identity_files[0].endswith("/.ssh/id_mlu")
    assert str(t.known_hosts) == "/etc/orch/known_hosts"
    s = resolve_target(HostRef.parse("mlu-slave"), SSHSpec(), cfg())
    assert s.proxy_command == "ssh -W 192.0.2.11:22 gateway" and s.port == 22


def test_job_values_win_over_ssh_config():
    spec = SSHSpec(identity_file="/keys/job", known_hosts="/keys/kh")
    t = resolve_target(HostRef.parse("root@mlu-master:22"), spec, cfg())
    assert (t.user, t.port) == ("root", 22)
    assert t.identity_files[0] == "/keys/job" and str(t.known_hosts) == "/keys/kh"


def test_fingerprint_is_openssh_sha256():
    import base64
    import hashlib

    k = paramiko.RSAKey.generate(1024)
    want = "SHA256:" + base64.b64encode(hashlib.sha256(k.asbytes()).digest()).decode().rstrip("=")
    assert fingerprint(k) == want
