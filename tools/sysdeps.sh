#!/usr/bin/env bash
# Best-effort install of the Debian packages listed in tools/apt-packages.txt.
# Needs root and apt-get; otherwise it says so and leaves the machine alone (the tests that
# need a package skip with a reason). Never fails the build.
set -uo pipefail
cd "$(dirname "$0")"
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' apt-packages.txt | tr -s ' \t' '\n' | sed '/^$/d')
[ "${#wanted[@]}" -eq 0 ] && exit 0
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "sysdeps: not root or no apt-get; tests that need ${missing[*]} will skip" >&2
    exit 0
fi
echo "sysdeps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || echo "sysdeps: apt-get install failed; the tests that need these packages will skip" >&2
fi
exit 0
