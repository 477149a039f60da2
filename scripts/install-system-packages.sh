#!/usr/bin/env bash
# Install the Debian packages fuzz needs, only those that are missing.
# Usage: scripts/install-system-packages.sh PKG...
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# policy-rc.d stops postinst scripts from starting services (docker-registry, postgresql):
# fuzz starts its own instances on 127.0.0.1 when it needs them.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=1
fi
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
[ "$created_policy" -eq 1 ] && $SUDO rm -f "$policy"
exit 0
