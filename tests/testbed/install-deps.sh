#!/usr/bin/env bash
# Debian packages the testbed and the suite need; installs only what is missing. Needs root.
set -euo pipefail
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v ip >/dev/null || need+=(iproute2)
command -v ss >/dev/null || need+=(iproute2)
command -v sha256sum >/dev/null || need+=(coreutils)
[ -x /usr/bin/python3.11 ] || need+=(python3.11)
/usr/bin/python3.11 -c "import ensurepip" 2>/dev/null || need+=(python3.11-venv)
command -v chromium >/dev/null || need+=(chromium)
[ -d /usr/share/fonts/opentype/noto ] || need+=(fonts-noto-cjk)
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
