#!/usr/bin/env bash
# Build (once) a Debian trixie root holding the real Blender binary (4.3, Python 3.13), Xvfb and ImageMagick,
# for the tests that install the built extension into a real Blender. Cached: a finished root is reused.
#
#   sudo scripts/blender-root.sh [DIR]      # default: ~/.cache/dreamfusion/blender-trixie
#
# Prints the root's path on its last line. Needs root (debootstrap, chroot) and Debian's package mirror.
set -euo pipefail

ROOT_DIR="${1:-${DREAMFUSION_BLENDER_ROOT:-$HOME/.cache/dreamfusion/blender-trixie}}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Debian's blender takes numpy from the system (official builds bundle it); the add-on needs it.
PACKAGES="blender python3-numpy xvfb xauth xdotool libgl1-mesa-dri imagemagick"

if [ "$(cat "$ROOT_DIR/.complete" 2>/dev/null)" = "$PACKAGES" ] && [ -x "$ROOT_DIR/usr/bin/blender" ]; then
    echo "$ROOT_DIR"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "blender-root.sh: needs root (debootstrap and chroot)" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# A root left by an interrupted run may still have /proc mounted: never recurse into it.
umount -l "$ROOT_DIR/proc" 2>/dev/null || true
rm -rf --one-file-system "$ROOT_DIR"
mkdir -p "$ROOT_DIR"
debootstrap --variant=minbase trixie "$ROOT_DIR" "$MIRROR" >"$ROOT_DIR.debootstrap.log" 2>&1 || {
    tail -20 "$ROOT_DIR.debootstrap.log" >&2; exit 1; }
cp /etc/resolv.conf "$ROOT_DIR/etc/resolv.conf" 2>/dev/null || true
mount -t proc proc "$ROOT_DIR/proc"
trap 'umount "$ROOT_DIR/proc" 2>/dev/null || true' EXIT
chroot "$ROOT_DIR" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$ROOT_DIR" apt-get install -y -qq --no-install-recommends $PACKAGES \
    >"$ROOT_DIR.apt.log" 2>&1 || { tail -20 "$ROOT_DIR.apt.log" >&2; exit 1; }
chroot "$ROOT_DIR" apt-get clean
chroot "$ROOT_DIR" blender --version | head -1 >&2
echo "$PACKAGES" >"$ROOT_DIR/.complete"  # a root made for another package list is rebuilt
echo "$ROOT_DIR"
