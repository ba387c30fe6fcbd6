#!/usr/bin/env bash
# Build the CPU test image without any container registry.
#
#   docker/build-cpu-image-offline.sh OUT.tar.gz [NAME:TAG]
#
# debootstrap (variant minbase) of Debian bookworm from the mirror apt already
# uses -> `docker import` on the daemon named by DOCKER_HOST -> `docker save`
# | gzip -1 > OUT.tar.gz, plus OUT.tar.gz.sha256 (sha256sum format).
#
# The image carries Debian's /usr/bin/python3.11 and the shared libraries
# torch needs, but no Python packages: a venv made with /usr/bin/python3.11 on
# the machine is bind-mounted read-only into containers at the same path.
#
# Environment:
#   DOCKER_HOST              daemon used for import/save (required: this script
#                            never guesses a daemon)
#   ORCHESTRATE_ROOTFS_CACHE directory for the debootstrap rootfs tarball
#                            (default /var/tmp/orchestrate-testbed-cache); a
#                            second build with the same package list skips
#                            debootstrap
#   DEBIAN_MIRROR            override the mirror (default: URIs of the first
#                            entry of /etc/apt/sources.list.d/debian.sources)
#   KEEP_IMAGE=1             leave NAME:TAG loaded on the daemon (default: it
#                            is removed after the save)
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "build-cpu-image-offline: $*" >&2; exit 1; }
log() { echo "build-cpu-image-offline: $*" >&2; }

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 OUT.tar.gz [NAME:TAG]"
OUT=$1
NAME=${2:-orchestrate/testbed-cpu:1}
[[ -n ${DOCKER_HOST:-} ]] || die "DOCKER_HOST is not set (which daemon should import the image?)"
[[ $(id -u) == 0 ]] || die "must run as root (debootstrap)"
for c in debootstrap docker tar gzip sha256sum; do
    command -v "$c" >/dev/null || die "missing command: $c (apt-get install -y debootstrap docker.io)"
done

SUITE=bookworm
# Kept small: python3 for the venv's interpreter (python3-venv so docker/Dockerfile.cpu
# can make a venv without apt), iproute2/procps for
# debugging and GLOO_SOCKET_IFNAME discovery, libstdc++6/libgomp1 that torch's
# wheels expect from the system, ca-certificates for anything that fetches.
PACKAGES=python3,python3-venv,iproute2,procps,libstdc++6,libgomp1,ca-certificates
CACHE=${ORCHESTRATE_ROOTFS_CACHE:-/var/tmp/orchestrate-testbed-cache}

mirror_from_apt() {
    local f=/etc/apt/sources.list.d/debian.sources
    if [[ -r $f ]]; then
        awk '/^URIs:/ {print $2; exit}' "$f"
    elif [[ -r /etc/apt/sources.list ]]; then
        awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list
    fi
}
MIRROR=${DEBIAN_MIRROR:-$(mirror_from_apt)}
[[ -n $MIRROR ]] || die "no Debian mirror found in apt's sources; set DEBIAN_MIRROR"

mkdir -p "$CACHE"
key=$(printf '%s\n' "$SUITE" "$PACKAGES" "minbase" "cleanup-v1" | sha256sum | cut -c1-16)
ROOTFS_TAR=$CACHE/rootfs-$SUITE-$key.tar

if [[ -s $ROOTFS_TAR ]]; then
    log "using cached rootfs $ROOTFS_TAR"
else
    work=$(mktemp -d "$CACHE/debootstrap.XXXXXX")
    trap 'rm -rf --one-file-system "$work"' EXIT
    log "debootstrap $SUITE ($PACKAGES) from $MIRROR"
    t0=$SECONDS
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work/rootfs" "$MIRROR" \
            >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        [[ -f $work/rootfs/debootstrap/debootstrap.log ]] && tail -n 30 "$work/rootfs/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    r=$work/rootfs
    # Nothing in the image needs the package caches, docs or locales.
    rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* \
           "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* \
           "$r"/usr/share/locale/* "$r"/var/log/*.log "$r"/debootstrap
    # Docker manages these; keep the host's out of the image.
    : >"$r/etc/resolv.conf"
    echo testbed >"$r/etc/hostname"
    log "debootstrap done in $((SECONDS - t0)) s"
    tar --numeric-owner -C "$r" -cf "$ROOTFS_TAR.tmp" .
    mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    rm -rf --one-file-system "$work"
    trap - EXIT
fi

log "docker import -> $NAME on $DOCKER_HOST"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "orchestrate offline CPU image ($SUITE minbase: $PACKAGES)" \
    "$ROOTFS_TAR" "$NAME" >/dev/null

mkdir -p "$(dirname "$OUT")"
log "docker save $NAME | gzip -1 > $OUT"
docker save "$NAME" | gzip -1 >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
(cd "$(dirname "$OUT")" && sha256sum "$(basename "$OUT")") >"$OUT.sha256"

if [[ ${KEEP_IMAGE:-0} != 1 ]]; then
    docker rmi "$NAME" >/dev/null
fi
log "wrote $OUT ($(du -h "$OUT" | cut -f1)), sha256 $(cut -d' ' -f1 "$OUT.sha256")"
