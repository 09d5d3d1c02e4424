#!/bin/busybox sh
# PID 1 of the power-cut guest (tests/power_cut.rs). The host appends the
# round's files to the initramfs: /rp/round (ROUND, CHECK, WORK, SLOT_MIB,
# PLAN_MIB) and /rp/check (chk_* calls). /dev/vda is the ext4 data disk,
# /dev/vdb the output disk: the check's text at offset 0, the WORK plan the
# host writes after judging the check at PLAN_MIB, disk dumps in slots of
# SLOT_MIB MiB from SLOT_MIB on.
#
# Lines for the host go through /dev/kmsg: with one CPU, printk writes them
# to the serial port before the write returns, so an ACK reaches the host
# before the next operation starts, and a line the host lacks was not printed.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp

say() { echo "<2>RP $*" > /dev/kmsg; }
idle() { while true; do sleep 3600; done; }
fatal() { say "FATAL $*"; idle; }

for m in $(cat /modules/order); do insmod "/modules/$m.ko" || fatal "insmod $m"; done
. /rp/round
say "BOOT round=$ROUND"
n=0
while [ ! -b /dev/vda ] || [ ! -b /dev/vdb ]; do
  n=$((n + 1)); [ $n -gt 100 ] && fatal "no virtio disks"; sleep 0.1
done
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt || fatal "mount of the data disk failed"
cd /mnt || fatal "cd /mnt"
export REFPOINT_HOME=/mnt/home
R=/bin/refpoint
T=/tmp/check.txt

# ---- CHECK: results as blocks in $T, disk contents dumped to slots ----

# blk LABEL CMD...: run CMD, append its rc, stdout and stderr to $T.
blk() {
  label=$1; shift
  "$@" > /tmp/b.out 2> /tmp/b.err < /dev/null
  rc=$?
  { echo "@@BEGIN $label rc=$rc"; cat /tmp/b.out; echo "@@STDERR"; cat /tmp/b.err; echo "@@END t=$(cut -d' ' -f1 /proc/uptime)"; } >> $T
  return $rc
}

# dump SLOT LABEL FILE: copy FILE to the output disk's slot.
dump() {
  dd if="$3" of=/dev/vdb bs=1M seek=$((($1 + 1) * SLOT_MIB)) conv=fsync 2> /dev/null
  r=$?
  echo "@@DUMP $2 slot=$1 size=$(stat -c %s "$3") rc=$r" >> $T
}

# chk_disk SLOT NAME KIND: existence, vhd check, content through refpoint.
chk_disk() {
  slot=$1 name=$2 kind=$3
  if [ ! -e "$name" ]; then echo "@@FILE $name missing" >> $T; return; fi
  echo "@@FILE $name size=$(stat -c %s "$name")" >> $T
  src=$name
  if [ "$kind" = machine ]; then
    blk "machine $name" $R machine show vm1
    active=$(sed -n 's/.*(writing to \(.*\))$/\1/p' /tmp/b.out | head -n 1)
    [ -n "$active" ] && src=$active
    echo "@@ACTIVE $name $src" >> $T
  fi
  if [ "$kind" = raw ]; then dump "$slot" "$name" "$name"; return; fi
  blk "vcheck $name $name" $R vhd check "$name" --json
  [ "$src" != "$name" ] && blk "vcheck $name $src" $R vhd check "$src" --json
  rm -f /tmp/x.img
  blk "convert $name" $R vhd convert "$src" /tmp/x.img --format raw && dump "$slot" "$name" /tmp/x.img
  rm -f /tmp/x.img
}

# chk_ids NAME TARGET ID...: status, then changes since each given ID and
# each ID the status lists.
chk_ids() {
  name=$1 target=$2; shift 2
  blk "status $name" $R rct status "$target" --json
  listed=$(grep -o 'rct:[0-9a-fA-F-]*:[0-9a-fA-F]*' /tmp/b.out)
  for id in $(echo "$@" $listed | tr ' ' '\n' | sort -u); do
    blk "changes $name $id" $R rct changes "$target" --since "$id" --json
  done
}

# chk_backup DIR POINT SLOT: verify an acknowledged point and restore it.
chk_backup() {
  blk "verify $2" $R verify "$1" --point "$2" --json
  rm -f /tmp/r.img
  blk "restore $2" $R restore "$1" --point "$2" --disk disk0 --to /tmp/r.img --format raw &&
    dump "$3" "restore-$2" /tmp/r.img
  rm -f /tmp/r.img
}

if [ "$CHECK" = 1 ]; then
  : > $T
  . /rp/check
  len=$(stat -c %s $T)
  dd if=$T of=/dev/vdb bs=64k conv=fsync 2> /dev/null || fatal "writing the check text"
  say "CHECK-DONE len=$len"
fi

if [ "$WORK" != 1 ]; then
  cd /
  umount /mnt || fatal "umount"
  say "HALT"
  poweroff -f
fi

# ---- WORK: one refpoint command per operation, BEGIN before, ACK after ----

ids() { echo "/tmp/ids/$(echo "$1" | tr / _)"; }
cmd() { "$@" > /tmp/o 2> /tmp/e < /dev/null; }
fail() { say "FAIL $1 rc=$2 $(head -c 600 /tmp/e | tr '\r\n' '  ')"; say "WORK-STOP"; idle; }
# Exit 3 is tracking's typed refusal (e.g. a raw disk that a cut caught
# while refpoint wrote it): do what a backup application does, start
# tracking over.
refusal() { # the kind of a tracking refusal in /tmp/e, if it is one
  if grep -q "modified while it was not tracked" /tmp/e; then echo modified_while_untracked
  elif grep -qE "tracking file .* is missing" /tmp/e; then echo tracking_file_missing
  elif grep -qE "tracking file .* is corrupt" /tmp/e; then echo tracking_file_corrupt
  elif grep -q "change tracking is disabled" /tmp/e; then echo tracking_disabled
  elif grep -q "cannot be proven" /tmp/e; then echo unproven_after_io_error
  fi
}
refused() { # SEQ TARGET
  say "REFUSED $1 kind=$(refusal)"
  cmd $R rct enable "$2" || fail "$1" $?
  : > "$(ids "$2")"
  say "RESTARTED $1"
}

op_write() { # SEQ TARGET OFFSET PATTERN PATTERN-OFFSET LENGTH
  dd if="/rp/p$4" of=/tmp/w bs=64k iflag=skip_bytes,count_bytes skip="$5" count="$6" 2> /dev/null
  say "BEGIN $1"
  cmd $R disk write "$2" --offset "$3" --from /tmp/w || fail "$1" $?
  say "ACK $1"
}
op_seal() { # SEQ TARGET
  say "BEGIN $1"
  cmd $R rct seal "$2"
  rc=$?
  if [ $rc != 0 ] && [ -n "$(refusal)" ]; then refused "$1" "$2"; return; fi
  [ $rc = 0 ] || fail "$1" $rc
  id=$(tail -n 1 /tmp/o)
  echo "$id" >> "$(ids "$2")"
  say "ACK $1 id=$id"
}
op_release() { # SEQ TARGET: the oldest ID this guest knows, keeping the newest
  f=$(ids "$2")
  if [ ! -f "$f" ] || [ "$(wc -l < "$f")" -lt 2 ]; then say "SKIP $1"; return; fi
  id=$(head -n 1 "$f")
  say "BEGIN $1 id=$id"
  cmd $R rct release "$2" "$id"
  rc=$?
  if [ $rc != 0 ] && [ -n "$(refusal)" ]; then refused "$1" "$2"; return; fi
  [ $rc = 0 ] || fail "$1" $rc
  sed -i 1d "$f"
  say "ACK $1 id=$id"
}
op_create() { # SEQ NAME SIZE BLOCK-SIZE
  say "BEGIN $1"
  cmd $R vhd create "$2" --size "$3" --block-size "$4" || fail "$1" $?
  say "ACK $1"
}
op_rawcreate() { # SEQ NAME SIZE (truncate + sync: not refpoint's promise)
  say "BEGIN $1"
  cmd sh -c "truncate -s $3 $2 && sync" || fail "$1" $?
  say "ACK $1"
}
op_enable() { # SEQ TARGET
  say "BEGIN $1"
  cmd $R rct enable "$2" || fail "$1" $?
  : > "$(ids "$2")"
  say "ACK $1"
}
op_mcreate() { # SEQ MACHINE NAME
  say "BEGIN $1"
  cmd $R machine create "$2" --disk "$3" || fail "$1" $?
  : > "$(ids "$2/disk0")"
  say "ACK $1"
}
op_backup() { # SEQ MACHINE: the point's number and the reference point's RCT ID
  say "BEGIN $1"
  cmd $R backup "$2" --to /mnt/bk --json || fail "$1" $?
  point=$(sed -n 's/^ *"point": *\([0-9]*\).*/\1/p' /tmp/o | head -n 1)
  cmd $R rct status "$2/disk0" --json || fail "$1" $?
  id=$(sed -n 's/.*"most_recent_id": *"\([^"]*\)".*/\1/p' /tmp/o)
  say "ACK $1 point=$point id=$id"
}

# The plan comes after the check, through the output disk: the host writes
# the script at PLAN_MIB MiB + 4 KiB, then "PLAN <round> <length>" at PLAN_MIB.
say "WAIT-PLAN"
skip=$((PLAN_MIB * 256))
while true; do
  dd if=/dev/vdb of=/tmp/hdr bs=4096 skip=$skip count=1 iflag=direct 2> /dev/null
  # shellcheck disable=SC2046
  set -- $(head -n 1 /tmp/hdr | tr -d '\0')
  [ "$1" = PLAN ] && [ "$2" = "$ROUND" ] && break
  sleep 0.1
done
dd if=/dev/vdb of=/tmp/plan bs=4096 skip=$((skip + 1)) count=$((($3 + 4095) / 4096)) iflag=direct 2> /dev/null
head -c "$3" /tmp/plan > /tmp/plan.sh
mkdir -p /tmp/ids
. /tmp/plan.sh
say "WORK-END"
idle
