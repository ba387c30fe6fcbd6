#!/usr/bin/env bash
# The project's multi-host testbed: N simulated hosts on this machine, each a
# network namespace + mount namespace with its own sshd and its own dockerd.
# See docs/testbed.md for the contract; the paths and names below are part of it.
#
#   testbed.sh up [N]            start N hosts (default 4); no-op if already up
#   testbed.sh down              stop everything (by pid), remove state (keeps the cache)
#   testbed.sh status            one line per host; exit 0 only if all are healthy
#   testbed.sh stop-sshd HOST    | start-sshd HOST
#   testbed.sh stop-dockerd HOST | start-dockerd HOST
#   testbed.sh net-down HOST     | net-up HOST   (unplug / plug the host's cable)
#   testbed.sh exec HOST CMD...  run CMD in HOST's net+mount namespaces
#                                (DOCKER_HOST set to that host's daemon)
#
# Environment: ORCHESTRATE_TESTBED_DIR (state, default /var/tmp/orchestrate-testbed),
# ORCHESTRATE_TESTBED_CACHE (default /var/tmp/orchestrate-testbed-cache),
# ORCHESTRATE_TESTBED_KEEP_ON_FAILURE=1 (a failed `up` leaves its state for a look),
# ORCHESTRATE_TESTBED_DOCKERD_ARGS (extra dockerd flags, word-split; e.g. --debug).
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
unset DOCKER_HOST DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
STATE=${ORCHESTRATE_TESTBED_DIR:-/var/tmp/orchestrate-testbed}
STATE=${STATE%/}
CACHE=${ORCHESTRATE_TESTBED_CACHE:-/var/tmp/orchestrate-testbed-cache}
CACHE=${CACHE%/}
BUILD_IMAGE=$REPO/docker/build-cpu-image-offline.sh

BRIDGE=otb-br0
NET=10.213.0
GATEWAY=$NET.1
IFNAME=eth0                       # the veth end inside each host's netns
HOST_LIB=/var/lib/orchestrate     # per-host path, a bind of <state>/hosts/tbN/lib
IMAGE_NAME=orchestrate/testbed-cpu:1
IMAGE_FILE=testbed-cpu.tar.gz     # under $HOST_LIB/images/ on every host
MAX_HOSTS=40
UP_DONE=0
PY=/usr/bin/python3

log() { printf 'testbed: %s\n' "$*" >&2; }
die() { printf 'testbed: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $STATE == /* && $STATE != *[[:space:]]* ]] || die "ORCHESTRATE_TESTBED_DIR must be an absolute path without spaces: '$STATE'"
[[ $STATE != / && $STATE != "$CACHE" ]] || die "refusing state dir '$STATE'"

# ---------------------------------------------------------------- naming
hdir() { echo "$STATE/hosts/tb$1"; }
addr() { echo "$NET.$((10 + $1))"; }
nsname() { echo "otb$1"; }
veth_root() { echo "otb$1v"; }              # root-namespace end, on the bridge
sock() { echo "$(hdir "$1")/docker.sock"; }

host_index() {   # tbN -> N (must exist in the state dir)
    local h=$1
    [[ $h =~ ^tb([0-9]+)$ ]] || die "not a testbed host name: '$h' (expected tb1, tb2, ...)"
    local i=${BASH_REMATCH[1]}
    [[ -d $(hdir "$i") ]] || die "host $h is not part of the testbed (is it up? see: $0 status)"
    echo "$i"
}

host_indices() {  # every host the state dir or the kernel knows about
    {
        local d
        for d in "$STATE"/hosts/tb*; do [[ -d $d ]] && echo "${d##*/tb}"; done
        ip netns list 2>/dev/null | awk '{print $1}' | sed -n 's/^otb\([0-9][0-9]*\)$/\1/p'
    } | sort -nu
}

# ---------------------------------------------------------------- processes
# Running, not a zombie: the init of some machines reaps orphans only every
# couple of seconds, and `kill -0` succeeds on a zombie.
alive() {
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [[ ${st%% *} != [ZX] ]]
}

# A pid from a pid file counts only if it is still that program (pids get reused).
pid_of() {   # pid_of FILE EXE_BASENAME -> pid or nothing
    local f=$1 exe=$2 pid
    [[ -s $f ]] || return 0
    pid=$(tr -dc 0-9 <"$f")
    [[ -n $pid ]] || return 0
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */"$exe" ]] && alive "$pid" && echo "$pid"
    return 0
}
holder_pid() { pid_of "$(hdir "$1")/holder.pid" sleep; }
holder_up() { [[ -n $(holder_pid "$1") ]]; }
dockerd_pid() { pid_of "$(hdir "$1")/dockerd.pid" dockerd; }
sshd_pid() { pid_of "$(hdir "$1")/sshd.pid" sshd; }

stop_pid() {   # stop_pid PID WHAT [GRACE_SECONDS]
    local pid=$1 what=$2 grace=${3:-10} n
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((n = 0; n < grace * 10; n++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    log "$what (pid $pid) ignored SIGTERM for ${grace}s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((n = 0; n < 50; n++)); do alive "$pid" || return 0; sleep 0.1; done
    log "WARNING: $what (pid $pid) is still there after SIGKILL"
}

kill_pids() {  # kill_pids WHAT PID... : TERM, wait up to 5 s, KILL what is left
    local what=$1; shift
    local pids=() p n
    for p in "$@"; do [[ $p =~ ^[0-9]+$ && $p != $$ && $p != 1 ]] && pids+=("$p"); done
    ((${#pids[@]})) || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for ((n = 0; n < 50; n++)); do
        local alive=()
        for p in "${pids[@]}"; do alive "$p" && alive+=("$p"); done
        ((${#alive[@]})) || return 0
        sleep 0.1
    done
    log "$what: SIGKILL to ${alive[*]}"
    kill -KILL "${alive[@]}" 2>/dev/null || true
}

# Start a long-lived process detached from this script: its own session, stdin
# from /dev/null, output to LOG, and no inherited descriptor above 2 (a daemon
# holding our lock, or a pipe `make test | tee` waits on, would hang them).
spawn() {   # spawn LOG CMD... ; $! is the process (setsid/nsenter/unshare exec, no fork)
    local logf=$1; shift
    (
        local fd
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            ((fd > 2)) && eval "exec $fd>&-"
        done
        exec setsid "$@"
    ) </dev/null >>"$logf" 2>&1 &
}

ns_args() {  # nsenter options that put a process into host i's namespaces
    local i=$1 hp; hp=$(holder_pid "$i")
    [[ -n $hp ]] || die "tb$i: its namespace holder is not running (testbed is broken: run '$0 down' then '$0 up')"
    echo "--net=/run/netns/$(nsname "$i") --mount=/proc/$hp/ns/mnt --uts=/proc/$hp/ns/uts"
}

# Run a command inside host i's namespaces (the holder keeps the mount namespace).
in_host() {
    local i=$1; shift
    local a; a=$(ns_args "$i")
    # shellcheck disable=SC2086
    nsenter $a -- "$@"
}

docker_ok() { timeout 10 docker -H "unix://$(sock "$1")" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

ssh_banner_ok() {  # sshd answers on the host's address, seen from the controller
    local a; a=$(addr "$1")
    [[ $(timeout 3 bash -c "exec 3<>/dev/tcp/$a/22 && head -c 4 <&3" 2>/dev/null) == SSH- ]]
}

wait_for() {   # wait_for SECONDS WHAT CMD...
    local secs=$1 what=$2; shift 2
    local n
    for ((n = 0; n < secs * 5; n++)); do
        "$@" && return 0
        sleep 0.2
    done
    return 1
}

# ---------------------------------------------------------------- pieces of a host
start_holder() {
    local i=$1 d; d=$(hdir "$i")
    rm -f "$d/holder.pid"
    # A private mount namespace in the host's netns: /var/lib/orchestrate there
    # is this host's own directory. `sleep` keeps the namespace alive so sshd
    # and dockerd can be (re)started into it independently.
    mkdir -p "$d/etc-docker" /etc/docker "$d/root-home"
    spawn "$d/holder.log" nsenter --net="/run/netns/$(nsname "$i")" -- \
        unshare --mount --uts --propagation private -- /bin/sh -c '
            set -e
            mount --make-rprivate /
            hostname "$1"
            mkdir -p "$2"
            mount --bind "$3/lib" "$2"
            # Engine 20.10 takes its ID from /etc/docker/key.json: one per host.
            mount --bind "$3/etc-docker" /etc/docker
            # Names of all hosts, so reverse lookups (torchrun, gloo) answer
            # at once instead of waiting on a DNS server nobody can reach.
            mount --bind "$3/etc-hosts" /etc/hosts
            # Each host has its own root home: the login shell of the machine running
            # the testbed (its .bashrc may run pyenv, conda ...) is not every host login shell.
            mount --bind "$3/root-home" /root
            echo $$ >"$3/holder.pid.tmp"; mv "$3/holder.pid.tmp" "$3/holder.pid"
            exec sleep infinity' holder "tb$i" "$HOST_LIB" "$d"
    wait_for 10 "tb$i holder" holder_up "$i" ||
        { cat "$d/holder.log" >&2; die "tb$i: could not create its mount namespace"; }
}

start_dockerd() {
    local i=$1 d pid; d=$(hdir "$i")
    if [[ -n $(dockerd_pid "$i") ]]; then log "tb$i: dockerd already running"; return 0; fi
    rm -f "$d/dockerd.pid" "$d/docker.sock"
    local init_path; init_path=$(command -v docker-init || command -v tini-static || true)
    [[ -n $init_path ]] || die "no docker-init/tini-static on PATH (apt-get install -y tini): docker run --init would fail"
    local a; a=$(ns_args "$i")
    # shellcheck disable=SC2086
    spawn "$d/dockerd.log" nsenter $a -- \
        dockerd \
        --config-file "$d/daemon.json" \
        --data-root "$d/docker" \
        --exec-root "$d/exec" \
        -H "unix://$d/docker.sock" \
        --pidfile "$d/dockerd.pid" \
        --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
        --storage-driver=overlay2 \
        --init-path "$init_path" \
        --cgroup-parent "/otb-tb$i" \
        ${ORCHESTRATE_TESTBED_DOCKERD_ARGS:-}
    pid=$!
    local n
    for ((n = 0; n < 300; n++)); do
        if ! alive "$pid"; then
            tail -n 25 "$d/dockerd.log" >&2
            die "tb$i: dockerd exited during start (log: $d/dockerd.log)"
        fi
        [[ -n $(dockerd_pid "$i") ]] && docker_ok "$i" && return 0
        sleep 0.2
    done
    tail -n 25 "$d/dockerd.log" >&2
    die "tb$i: dockerd did not answer on $d/docker.sock within 60 s (log: $d/dockerd.log)"
}

stop_dockerd() {
    local i=$1 pid; pid=$(dockerd_pid "$i")
    [[ -n $pid ]] || return 0
    # Without live-restore dockerd stops its containers on SIGTERM; remove them
    # first so a shutdown never waits on a container's stop timeout.
    local ids
    ids=$(timeout 10 docker -H "unix://$(sock "$i")" ps -aq 2>/dev/null || true)
    [[ -n $ids ]] && timeout 60 docker -H "unix://$(sock "$i")" rm -f $ids >/dev/null 2>&1 || true
    stop_pid "$pid" "tb$i dockerd" 30
    rm -f "$(hdir "$i")/dockerd.pid"
}

write_sshd_config() {
    local i=$1 d; d=$(hdir "$i")
    cat >"$d/sshd_config" <<EOF
# testbed host tb$i; generated by tests/testbed/testbed.sh
Port 22
ListenAddress $(addr "$i")
AddressFamily inet
HostKey $d/ssh_host_ed25519_key
PidFile $d/sshd.pid
AuthorizedKeysFile $STATE/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The keys live under /var/tmp (world-writable), which StrictModes rejects.
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
MaxSessions 50
MaxStartups 100
SetEnv DOCKER_HOST=unix://$d/docker.sock
Subsystem sftp internal-sftp
LogLevel VERBOSE
EOF
    mkdir -p /run/sshd && chmod 0755 /run/sshd
    sshd -t -f "$d/sshd_config" || die "tb$i: sshd rejects $d/sshd_config"
}

start_sshd() {
    local i=$1 d pid; d=$(hdir "$i")
    if [[ -n $(sshd_pid "$i") ]]; then log "tb$i: sshd already running"; return 0; fi
    rm -f "$d/sshd.pid"
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
    local a; a=$(ns_args "$i")
    # shellcheck disable=SC2086
    spawn "$d/sshd.log" nsenter $a -- "$(command -v sshd)" -D -f "$d/sshd_config" -E "$d/sshd.log"
    pid=$!
    local n
    for ((n = 0; n < 100; n++)); do
        if ! alive "$pid"; then
            tail -n 15 "$d/sshd.log" >&2
            die "tb$i: sshd exited during start (log: $d/sshd.log)"
        fi
        [[ -n $(sshd_pid "$i") ]] && ssh_banner_ok "$i" && return 0
        sleep 0.2
    done
    tail -n 15 "$d/sshd.log" >&2
    die "tb$i: sshd does not answer on $(addr "$i"):22 (log: $d/sshd.log)"
}

stop_sshd() {
    local i=$1
    stop_pid "$(sshd_pid "$i")" "tb$i sshd" 10
    rm -f "$(hdir "$i")/sshd.pid"
}

# ---------------------------------------------------------------- state files
write_hosts_json() {
    "$PY" - "$STATE" "$NET" "$IFNAME" "$HOST_LIB" <<'EOF'
import json, os, sys
state, net, ifname, host_lib = sys.argv[1:]

def pid(path, exe):
    try:
        p = int(open(path).read().strip())
        if os.readlink(f"/proc/{p}/exe").rsplit("/", 1)[-1] == exe:
            return p
    except (OSError, ValueError):
        pass
    return None

hosts = []
names = sorted((n for n in os.listdir(f"{state}/hosts") if n.startswith("tb")), key=lambda n: int(n[2:]))
for name in names:
    i = int(name[2:])
    d = f"{state}/hosts/{name}"
    hosts.append({
        "name": name,
        "address": f"{net}.{10 + i}",
        "netns": f"otb{i}",
        "ifname": ifname,
        "veth_root": f"otb{i}v",
        "docker_sock": f"{d}/docker.sock",
        "sshd_pid": pid(f"{d}/sshd.pid", "sshd"),
        "dockerd_pid": pid(f"{d}/dockerd.pid", "dockerd"),
        "holder_pid": pid(f"{d}/holder.pid", "sleep"),
        "lib_dir": f"{d}/lib",
        "host_lib": host_lib,
        "host_dir": d,
        "ssh_port": 22,
        "sshd_config": f"{d}/sshd_config",
        "host_key": open(f"{d}/ssh_host_ed25519_key.pub").read().split()[:2],
    })
tmp = f"{state}/hosts.json.tmp"
with open(tmp, "w") as f:
    json.dump(hosts, f, indent=2)
    f.write("\n")
os.replace(tmp, f"{state}/hosts.json")
EOF
}

write_etc_hosts() {   # write_etc_hosts i n: host i's /etc/hosts
    local i=$1 n=$2 j d; d=$(hdir "$i")
    {
        printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
        printf '%s\totb-controller\n' "$GATEWAY"
        for ((j = 1; j <= n; j++)); do printf '%s\ttb%s\n' "$(addr "$j")" "$j"; done
    } >"$d/etc-hosts"
}

write_client_files() {   # ssh_config + known_hosts for hosts 1..n
    local n=$1 i k
    : >"$STATE/known_hosts.tmp"
    : >"$STATE/ssh_config.tmp"
    for ((i = 1; i <= n; i++)); do
        k=$(cut -d' ' -f1,2 "$(hdir "$i")/ssh_host_ed25519_key.pub")
        printf 'tb%s %s\n%s %s\n' "$i" "$k" "$(addr "$i")" "$k" >>"$STATE/known_hosts.tmp"
        cat >>"$STATE/ssh_config.tmp" <<EOF
Host tb$i
    HostName $(addr "$i")
    User root
    Port 22
    IdentityFile $STATE/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $STATE/known_hosts
    StrictHostKeyChecking yes

EOF
    done
    cat >>"$STATE/ssh_config.tmp" <<EOF
# The same hosts by address.
Host $NET.*
    User root
    Port 22
    IdentityFile $STATE/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $STATE/known_hosts
    StrictHostKeyChecking yes
EOF
    mv "$STATE/known_hosts.tmp" "$STATE/known_hosts"
    mv "$STATE/ssh_config.tmp" "$STATE/ssh_config"
}

# ---------------------------------------------------------------- image
image_cache_key() {
    { cat "$BUILD_IMAGE"; echo "$IMAGE_NAME"; } | sha256sum | cut -c1-16
}

provide_image() {
    local n=$1 cached i
    cached=$CACHE/testbed-cpu-$(image_cache_key).tar.gz
    if [[ -s $cached && -s $cached.sha256 ]] && (cd "$CACHE" && sha256sum --status -c "${cached##*/}.sha256"); then
        log "image: cached $cached"
    else
        log "image: building $IMAGE_NAME with tb1's daemon (first time: debootstrap, ~1 min)"
        DOCKER_HOST="unix://$(sock 1)" ORCHESTRATE_ROOTFS_CACHE=$CACHE \
            "$BUILD_IMAGE" "$cached" "$IMAGE_NAME" ||
            die "image build failed"
    fi
    # Every host starts without the image; a tarball is waiting in its lib dir.
    if docker -H "unix://$(sock 1)" image inspect "$IMAGE_NAME" >/dev/null 2>&1; then
        docker -H "unix://$(sock 1)" rmi "$IMAGE_NAME" >/dev/null
    fi
    cp "$cached" "$STATE/image.tar.gz"
    (cd "$STATE" && sha256sum image.tar.gz >image.tar.gz.sha256)
    for ((i = 1; i <= n; i++)); do
        mkdir -p "$(hdir "$i")/lib/images"
        # Real copies (no hardlinks): a test may delete or corrupt one host's copy.
        cp --reflink=never "$STATE/image.tar.gz" "$(hdir "$i")/lib/images/$IMAGE_FILE"
    done
}

# ---------------------------------------------------------------- verbs
host_healthy() {   # host_healthy i [quiet]
    local i=$1
    [[ -n $(holder_pid "$i") && -n $(dockerd_pid "$i") && -n $(sshd_pid "$i") ]] &&
        docker_ok "$i" && ssh_banner_ok "$i"
}

testbed_count() {  # hosts recorded by a completed `up`, or nothing
    [[ -f $STATE/up.done ]] && cat "$STATE/up.done"
    return 0
}

all_healthy() {
    local n=$1 i
    [[ -f $STATE/hosts.json ]] || return 1
    ip link show "$BRIDGE" >/dev/null 2>&1 || return 1
    for ((i = 1; i <= n; i++)); do host_healthy "$i" || return 1; done
}

check_prereqs() {
    [[ $(id -u) == 0 ]] || die "must run as root (network namespaces, mounts, dockerd)"
    local c missing=()
    for c in ip nsenter unshare setsid mount dockerd containerd runc docker sshd ssh-keygen debootstrap \
             sha256sum gzip timeout flock "$PY"; do
        command -v "$c" >/dev/null || missing+=("$c")
    done
    ((${#missing[@]} == 0)) ||
        die "missing: ${missing[*]} (apt-get install -y docker.io openssh-server debootstrap)"
    [[ -d /sys/fs/cgroup ]] || die "no /sys/fs/cgroup"
}

cmd_up() {
    local n=${1:-4}
    [[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le $MAX_HOSTS ]] || die "up: N must be 1..$MAX_HOSTS, got '$n'"
    check_prereqs
    local have; have=$(testbed_count)
    if [[ -n $have ]]; then
        if [[ $have != "$n" ]]; then
            die "testbed is already up with $have hosts (asked for $n): run '$0 down' first"
        fi
        if all_healthy "$n"; then
            log "already up ($n hosts, state $STATE)"
            return 0
        fi
        log "state says up but some host is not healthy; tearing down and starting again"
        "$0" status >&2 || true
        cmd_down
    elif [[ -e $STATE || -n $(host_indices) ]] || ip link show "$BRIDGE" >/dev/null 2>&1; then
        log "leftovers of an earlier, unfinished start; cleaning them first"
        cmd_down
    fi

    local t0=$SECONDS
    UP_DONE=0
    trap 'on_up_exit' EXIT
    trap 'exit 130' INT TERM
    mkdir -p "$STATE/hosts" "$CACHE"
    chmod 0755 "$STATE"
    ssh-keygen -q -t ed25519 -N '' -C orchestrate-testbed -f "$STATE/id_ed25519"
    cp "$STATE/id_ed25519.pub" "$STATE/authorized_keys"
    chmod 0600 "$STATE/id_ed25519" "$STATE/authorized_keys"

    # Network: one bridge in the root namespace; the controller is $GATEWAY.
    ip link add "$BRIDGE" type bridge
    ip addr add "$GATEWAY/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    local i d
    for ((i = 1; i <= n; i++)); do
        d=$(hdir "$i")
        mkdir -p "$d/lib" "$d/docker" "$d/exec"
        mkdir -p "$d/etc-docker"
        echo '{}' >"$d/daemon.json"
        write_etc_hosts "$i" "$n"
        ip netns add "$(nsname "$i")"
        ip link add "$(veth_root "$i")" type veth peer name "$IFNAME" netns "$(nsname "$i")"
        ip link set "$(veth_root "$i")" master "$BRIDGE" up
        ip -n "$(nsname "$i")" link set lo up
        ip -n "$(nsname "$i")" addr add "$(addr "$i")/24" dev "$IFNAME"
        ip -n "$(nsname "$i")" link set "$IFNAME" up
        ssh-keygen -q -t ed25519 -N '' -C "tb$i" -f "$d/ssh_host_ed25519_key"
        write_sshd_config "$i"
        start_holder "$i"
    done
    # dockerd takes a second or two each: start them all, then wait.
    local pids=()
    for ((i = 1; i <= n; i++)); do
        ( trap - EXIT; start_dockerd "$i" ) &
        pids+=($!)
    done
    local failed=0 p
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
    ((failed == 0)) || die "a dockerd did not start (see above)"
    for ((i = 1; i <= n; i++)); do start_sshd "$i"; done
    write_client_files "$n"
    provide_image "$n"
    write_hosts_json

    # Hosts must reach each other (a bridge filtered by br_netfilter would not).
    if ((n >= 2)); then
        in_host 1 timeout 3 bash -c "exec 3<>/dev/tcp/$(addr 2)/22" ||
            die "tb1 cannot reach tb2 over $BRIDGE (iptables FORWARD policy with br_netfilter?)"
    fi
    echo "$n" >"$STATE/up.done"
    UP_DONE=1
    log "up: $n hosts in $((SECONDS - t0)) s (state $STATE; ssh -F $STATE/ssh_config tb1)"
}

on_up_exit() {
    local rc=$?
    trap - EXIT
    ((UP_DONE == 1)) && return 0
    log "up FAILED; logs under $STATE/hosts/*/"
    local f
    for f in "$STATE"/hosts/*/{dockerd,sshd,holder}.log; do
        [[ -s $f ]] || continue
        echo "---- $f (last 10 lines)" >&2
        tail -n 10 "$f" >&2
    done
    if [[ ${ORCHESTRATE_TESTBED_KEEP_ON_FAILURE:-0} == 1 ]]; then
        log "keeping the half-started testbed (ORCHESTRATE_TESTBED_KEEP_ON_FAILURE=1); '$0 down' removes it"
    else
        log "tearing the half-started testbed down"
        cmd_down || true
    fi
    exit $((rc == 0 ? 1 : rc))
}

cgroup_dirs() {  # cgroup directories dockerd of host i puts containers under
    local i=$1 c
    for c in /sys/fs/cgroup/*/"otb-tb$i" /sys/fs/cgroup/"otb-tb$i"; do
        [[ -d $c ]] && echo "$c"
    done
    return 0
}

down_host() {   # best effort: every step runs even if an earlier one failed
    local i=$1
    set +e
    [[ -d $(hdir "$i") ]] && stop_dockerd "$i"
    [[ -d $(hdir "$i") ]] && stop_sshd "$i"
    # Whatever else lives in the host: ssh sessions, host-network containers,
    # shims, the holder. Found by namespace, stopped by pid.
    local pids=()
    if [[ -e /run/netns/$(nsname "$i") ]]; then
        mapfile -t pids < <(ip netns pids "$(nsname "$i")" 2>/dev/null || true)
    fi
    [[ -d $(hdir "$i") && -n $(holder_pid "$i") ]] && pids+=("$(holder_pid "$i")")
    local c
    for c in $(cgroup_dirs "$i"); do
        mapfile -t -O "${#pids[@]}" pids < <(find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null || true)
    done
    kill_pids "tb$i leftovers" "${pids[@]}"
    for c in $(cgroup_dirs "$i"); do
        find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    ip netns del "$(nsname "$i")" 2>/dev/null || true
    ip link del "$(veth_root "$i")" 2>/dev/null || true
}

cmd_down() {
    local i idx pids=()
    idx=$(host_indices)
    # Hosts are independent: tear them down in parallel (dockerd takes ~1 s).
    for i in $idx; do
        ( trap - EXIT; down_host "$i" ) &
        pids+=($!)
    done
    local p
    for p in "${pids[@]}"; do wait "$p" || true; done
    ip link del "$BRIDGE" 2>/dev/null || true
    if [[ -d $STATE ]]; then
        # Nothing should be mounted under the state dir in this namespace; if
        # something is, unmount it rather than deleting through it.
        local m
        for m in $(findmnt -rn -o TARGET | grep -E "^$STATE(/|$)" | sort -r || true); do
            umount -l "$m" 2>/dev/null || true
        done
        local tries
        for tries in 1 2 3 4 5; do
            rm -rf --one-file-system "$STATE" 2>/dev/null && break
            sleep 1
        done
        [[ ! -e $STATE ]] || die "could not remove $STATE"
    fi
    log "down (cache kept: $CACHE)"
}

cmd_status() {
    if [[ ! -d $STATE/hosts ]]; then
        echo "testbed: not up (no $STATE)"
        return 1
    fi
    local n; n=$(testbed_count)
    local rc=0 i
    [[ -n $n ]] || { echo "testbed: start not finished (no $STATE/up.done)"; rc=1; }
    ip link show "$BRIDGE" >/dev/null 2>&1 || { echo "bridge $BRIDGE: missing"; rc=1; }
    printf '%-5s %-13s %-7s %-16s %-16s %s\n' HOST ADDRESS NETNS DOCKERD SSHD ""
    for i in $(host_indices); do
        local dp sp dst sst
        dp=$(dockerd_pid "$i"); sp=$(sshd_pid "$i")
        if [[ -n $dp ]] && docker_ok "$i"; then dst="up:$dp"; elif [[ -n $dp ]]; then dst="stuck:$dp"; rc=1; else dst=down; rc=1; fi
        if [[ -n $sp ]] && ssh_banner_ok "$i"; then sst="up:$sp"; elif [[ -n $sp ]]; then sst="silent:$sp"; rc=1; else sst=down; rc=1; fi
        local ns=yes; [[ -e /run/netns/$(nsname "$i") ]] || { ns=MISSING; rc=1; }
        [[ -n $(holder_pid "$i") ]] || { ns="$ns,nomnt"; rc=1; }
        printf '%-5s %-13s %-7s %-16s %-16s\n' "tb$i" "$(addr "$i")" "$ns" "$dst" "$sst"
    done
    return $rc
}

with_lock() {
    mkdir -p "$(dirname "$STATE")"
    exec 9>"$STATE.lock"
    flock -w 300 9 || die "another testbed.sh holds $STATE.lock"
}

main() {
    local verb=${1:-}
    shift || true
    case $verb in
        up) with_lock; cmd_up "$@" ;;
        down) [[ $(id -u) == 0 ]] || die "must run as root"; with_lock; cmd_down ;;
        status) cmd_status ;;
        stop-sshd | start-sshd | stop-dockerd | start-dockerd | net-down | net-up)
            [[ $# == 1 ]] || die "usage: $0 $verb HOST"
            local i; i=$(host_index "$1")
            with_lock
            case $verb in
                stop-sshd) stop_sshd "$i" ;;
                start-sshd) start_sshd "$i" ;;
                stop-dockerd) stop_dockerd "$i" ;;
                start-dockerd) start_dockerd "$i" ;;
                net-down) ip link set "$(veth_root "$i")" down ;;
                net-up) ip link set "$(veth_root "$i")" up ;;
            esac
            write_hosts_json
            ;;
        exec)
            [[ $# -ge 2 ]] || die "usage: $0 exec HOST CMD..."
            local i; i=$(host_index "$1"); shift
            in_host "$i" env DOCKER_HOST="unix://$(sock "$i")" "$@"
            ;;
        "" | -h | --help | help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' ;;
        *) die "unknown verb '$verb' (up, down, status, stop-sshd, start-sshd, stop-dockerd, start-dockerd, net-down, net-up, exec)" ;;
    esac
}

main "$@"
