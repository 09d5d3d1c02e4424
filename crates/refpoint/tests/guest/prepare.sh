#!/usr/bin/env bash
# Prepares what tests/power_cut.rs needs to boot a Linux guest under
# qemu-system-x86_64 (TCG), without installing qemu-system-x86 (whose
# Debian 7.2 package would replace the installed qemu-utils 10):
#
#   $CACHE/qemu-system-x86_64   wrapper: unpacked binary, its missing shared
#                               libraries (LD_LIBRARY_PATH) and firmware (-L)
#   $CACHE/vmlinuz              Debian's kernel (linux-image-amd64's package)
#   $CACHE/vmlinux              the same, uncompressed (PVH boot, faster)
#   $CACHE/modules/*.ko         virtio_pci, virtio_blk, ext4 and their
#                               dependencies, uncompressed, in load order
#                               (modules/order lists them)
#   $CACHE/busybox              busybox-static
#
# CACHE is $REFPOINT_GUEST_CACHE or /var/cache/refpoint-guest. Idempotent:
# once the stamp file exists the script returns at once. Needs Debian's
# package mirror (apt-get download) and root for apt-get update/install.
set -euo pipefail

CACHE=${REFPOINT_GUEST_CACHE:-/var/cache/refpoint-guest}
STAMP=$CACHE/ready-v2
[ -f "$STAMP" ] && exit 0

log() { echo "prepare.sh: $*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

# Host tools: mkfs.ext4 for the data disk.
if ! command -v mkfs.ext4 >/dev/null && ! [ -x /usr/sbin/mkfs.ext4 ] && ! [ -x /sbin/mkfs.ext4 ]; then
  log "installing e2fsprogs"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq e2fsprogs
fi
if ! apt-cache show qemu-system-x86 >/dev/null 2>&1; then
  log "apt-get update (no package lists)"
  $SUDO apt-get update -qq
fi

mkdir -p "$CACHE"
WORK=$CACHE/build
rm -rf "$WORK"
mkdir -p "$WORK/debs" "$WORK/root"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
deps_of() { apt-cache depends "$1" 2>/dev/null | awk '$1 == "Depends:" && $2 !~ /^</ {print $2}'; }

kernel_pkg=$(deps_of linux-image-amd64 | grep '^linux-image-' | head -1)
[ -n "$kernel_pkg" ] || { log "cannot resolve linux-image-amd64's kernel package"; exit 1; }

# qemu-system-x86's shared libraries that are not installed, with their own
# missing library dependencies (to a fixpoint); unpacked, not installed.
pkgs=(qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu busybox-static "$kernel_pkg")
queue=$(deps_of qemu-system-x86 | grep '^lib' || true)
seen=" "
while [ -n "$queue" ]; do
  next=""
  for p in $queue; do
    case "$seen" in *" $p "*) continue ;; esac
    seen="$seen$p "
    installed "$p" && continue
    pkgs+=("$p")
    next="$next $(deps_of "$p" | grep '^lib' || true)"
  done
  queue=$next
done

log "downloading: ${pkgs[*]}"
(cd "$WORK/debs" && apt-get download -q "${pkgs[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
for p in "${pkgs[@]}"; do
  ls "$WORK/debs/${p}_"*.deb >/dev/null 2>&1 || { log "download of $p failed"; exit 1; }
done
for f in "$WORK/debs"/*.deb; do dpkg-deb -x "$f" "$WORK/root"; done
log "downloaded $(du -sh "$WORK/debs" | cut -f1), unpacked $(du -sh "$WORK/root" | cut -f1)"

OUT=$CACHE/new
rm -rf "$OUT"
mkdir -p "$OUT/modules" "$OUT/firmware" "$OUT/lib"

# qemu: binary, libraries, firmware.
cp "$WORK/root/usr/bin/qemu-system-x86_64" "$OUT/qemu-bin"
for d in "$WORK/root/usr/lib/x86_64-linux-gnu" "$WORK/root/lib/x86_64-linux-gnu"; do
  [ -d "$d" ] && cp -a "$d"/. "$OUT/lib/"
done
# qemu's own modules: only TCG (the others need libraries we do not fetch).
find "$OUT/lib/qemu" -type f ! -name 'accel-tcg-x86_64.so' -delete
for d in "$WORK/root/usr/share/qemu" "$WORK/root/usr/share/seabios" "$WORK/root/usr/lib/ipxe/qemu"; do
  [ -d "$d" ] && cp -aL "$d"/. "$OUT/firmware/" 2>/dev/null || true
done
cat > "$OUT/qemu-system-x86_64" <<'WRAP'
#!/bin/sh
D=$(dirname "$(readlink -f "$0")")
QEMU_MODULE_DIR="$D/lib/qemu" LD_LIBRARY_PATH="$D/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$D/qemu-bin" -L "$D/firmware" "$@"
WRAP
chmod +x "$OUT/qemu-system-x86_64"
if LD_LIBRARY_PATH="$OUT/lib" ldd "$OUT/qemu-bin" "$OUT/lib/qemu/accel-tcg-x86_64.so" | grep 'not found'; then
  log "qemu-system-x86_64 still misses shared libraries (above)"; exit 1
fi
"$OUT/qemu-system-x86_64" --version | head -1 >&2

# Kernel and the modules the guest loads (dependencies first).
kdir=$(ls -d "$WORK/root/lib/modules"/*/ | head -1)
cp "$WORK/root/boot"/vmlinuz-* "$OUT/vmlinuz"
# TCG takes ~6 s to unpack the xz bzImage: keep the uncompressed ELF too,
# which qemu boots directly through its PVH entry point.
off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$OUT/vmlinuz" | head -1 | cut -d: -f1 || true)
if [ -n "$off" ]; then
  command -v xz >/dev/null || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq xz-utils >&2 || true
  tail -c +$((off + 1)) "$OUT/vmlinuz" | xz -dc --single-stream > "$OUT/vmlinux" 2>/dev/null || true
  [ -s "$OUT/vmlinux" ] || rm -f "$OUT/vmlinux"
fi
ko_path() { find "$kdir" -regextype posix-extended -regex ".*/$1\.ko(\.xz|\.zst|\.gz)?" | head -1; }
ko_deps() {
  local f; f=$(ko_path "$1")
  case "$f" in
    *.xz) xz -dc "$f" ;; *.zst) zstd -dcq "$f" ;; *.gz) gzip -dc "$f" ;; *) cat "$f" ;;
  esac | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '
}
order=""
add_module() {
  local m=${1//-/_}
  case " $order " in *" $m "*) return ;; esac
  local p; p=$(ko_path "$m")
  if [ -z "$p" ]; then
    m=${1//_/-}; p=$(ko_path "$m")
  fi
  if [ -z "$p" ]; then
    grep -q "/${1}.ko" "$kdir/modules.builtin" && return
    log "module $1 not found"; exit 1
  fi
  local d; for d in $(ko_deps "$m"); do add_module "$d"; done
  order="$order $m"
  case "$p" in
    *.xz) xz -dc "$p" ;; *.zst) zstd -dcq "$p" ;; *.gz) gzip -dc "$p" ;; *) cat "$p" ;;
  esac > "$OUT/modules/$m.ko"
}
for m in virtio_pci virtio_blk crc32c_generic libcrc32c ext4; do add_module "$m"; done
echo $order | tr ' ' '\n' > "$OUT/modules/order"

cp "$WORK/root/bin/busybox" "$OUT/busybox"
echo "$kernel_pkg" > "$OUT/kernel-package"

rm -rf "$CACHE/qemu-bin" "$CACHE/lib" "$CACHE/firmware" "$CACHE/modules"
mv "$OUT"/* "$CACHE/"
rm -rf "$OUT" "$WORK"
rm -f "$CACHE"/ready-v*
touch "$STAMP"
log "guest ready in $CACHE ($(du -sh "$CACHE" | cut -f1)): kernel $kernel_pkg, modules:$order"
