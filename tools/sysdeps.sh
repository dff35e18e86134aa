#!/usr/bin/env bash
# Best-effort install of the Debian packages listed in tools/apt-packages.txt.
# Needs root and apt-get; otherwise it says so and leaves the machine alone (the tests that
# need a package skip with a reason). Never fails the build.
# All missing packages go in one apt-get call; if that fails (e.g. one of them does not
# exist on this distribution, such as chromium on Ubuntu, where it is a snap), each is
# retried on its own, so one unavailable package does not keep the others out, and the
# ones that still fail are named.
set -uo pipefail
cd "$(dirname "$0")"
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' apt-packages.txt | tr -s ' \t' '\n' | sed '/^$/d')
[ "${#wanted[@]}" -eq 0 ] && exit 0
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for pkg in "${wanted[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "sysdeps: not root or no apt-get; tests that need ${missing[*]} will skip" >&2
    exit 0
fi
echo "sysdeps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
APT_LOG=${SYSDEPS_LOG:-/tmp/dnalm-sysdeps.log}
: >"$APT_LOG"
install() { apt-get install -y -qq --no-install-recommends "$@" >>"$APT_LOG" 2>&1; }
if install "${missing[@]}"; then
    exit 0
fi
apt-get update -qq >>"$APT_LOG" 2>&1
if install "${missing[@]}"; then
    exit 0
fi
# one at a time: which ones cannot be installed here?
failed=()
for pkg in "${missing[@]}"; do
    installed "$pkg" || install "$pkg" || failed+=("$pkg")
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "sysdeps: could not install ${failed[*]} (apt-get output in $APT_LOG); the tests that need them will skip" >&2
    echo "sysdeps: installed the others: $(for p in "${missing[@]}"; do installed "$p" && printf '%s ' "$p"; done)" >&2
fi
exit 0
