#!/usr/bin/env python3
"""A full and an incremental backup of a machine disk through librefpoint,
from Python with nothing but ctypes.

    python3 vendor_flow.py --disk vm1/disk0 --out backup.raw \
        [--state DIR] [--lib librefpoint.so.1] [--write]

1. A recovery checkpoint; its frozen view is read range by range of the
   allocation map (holes skipped) into OUT; the checkpoint becomes a
   reference point.
2. With --write, a few writes to the live disk (standing in for the guest).
3. Another recovery checkpoint; the ranges changed since the reference
   point are asked a page at a time and copied from the new view into OUT.

Any failure raises RefpointError with the library's code name and message.
"""

import argparse
import ctypes
import os
import sys
from ctypes import POINTER, byref, c_char, c_char_p, c_int, c_size_t, c_uint32, c_uint64, c_void_p

REFPOINT_OPEN_READ_ONLY = 1
REFPOINT_CHECKPOINT_RECOVERY = 1
REFPOINT_ID_MAX = 64


class Range(ctypes.Structure):
    _fields_ = [("offset", c_uint64), ("length", c_uint64)]


class Info(ctypes.Structure):
    _fields_ = [
        ("virtual_size", c_uint64),
        ("logical_sector_size", c_uint32),
        ("physical_sector_size", c_uint32),
        ("block_size", c_uint32),
        ("chain_depth", c_uint32),
        ("format", c_uint32),
        ("tracking_enabled", ctypes.c_int32),
        ("newer_changes", ctypes.c_int32),
        ("tracking_error", ctypes.c_int32),
        ("identity", c_char * 128),
        ("most_recent_id", c_char * REFPOINT_ID_MAX),
    ]


class RefpointError(Exception):
    pass


class Library:
    """The C functions this flow uses, with their argument types."""

    def __init__(self, path):
        lib = ctypes.CDLL(path)
        sigs = {
            "refpoint_open": [c_char_p, c_char_p, c_uint32, POINTER(c_void_p)],
            "refpoint_virtual_size": [c_void_p, POINTER(c_uint64)],
            "refpoint_get_info": [c_void_p, POINTER(Info)],
            "refpoint_read": [c_void_p, c_uint64, c_void_p, c_size_t],
            "refpoint_write": [c_void_p, c_uint64, c_void_p, c_size_t],
            "refpoint_flush": [c_void_p],
            "refpoint_tracking_enable": [c_void_p, c_uint64],
            "refpoint_allocation": [c_void_p, c_uint64, c_uint64, POINTER(Range), c_size_t,
                                    POINTER(c_size_t), POINTER(c_uint64)],
            "refpoint_query_changes": [c_void_p, c_char_p, c_char_p, c_uint64, c_uint64,
                                       POINTER(Range), c_size_t, POINTER(c_size_t),
                                       POINTER(c_uint64)],
            "refpoint_checkpoint_create": [c_void_p, c_uint32, POINTER(c_uint64)],
            "refpoint_checkpoint_rct_id": [c_void_p, c_uint64, c_char_p, c_size_t],
            "refpoint_checkpoint_convert": [c_void_p, c_uint64, POINTER(c_uint64)],
            "refpoint_reference_point_rct_id": [c_void_p, c_uint64, c_char_p, c_size_t],
        }
        for name, args in sigs.items():
            f = getattr(lib, name)
            f.argtypes, f.restype = args, c_int
        lib.refpoint_close.argtypes, lib.refpoint_close.restype = [c_void_p], None
        for name in ("refpoint_last_error", "refpoint_version"):
            getattr(lib, name).restype = c_char_p
        lib.refpoint_error_name.argtypes, lib.refpoint_error_name.restype = [c_int], c_char_p
        self.lib = lib

    def __getattr__(self, name):
        f = getattr(self.lib, "refpoint_" + name)

        def checked(*args):
            rc = f(*args)
            if rc != 0:
                raise RefpointError("%s: %s (%s)" % (
                    name, self.lib.refpoint_last_error().decode(),
                    self.lib.refpoint_error_name(rc).decode()))
        return checked

    def open(self, name, state, flags=0):
        d = c_void_p()
        self.__getattr__("open")(name.encode(), state and state.encode(), flags, byref(d))
        return d

    def close(self, d):
        self.lib.refpoint_close(d)


def copy(lib, disk, out, offset, length):
    """Copies [offset, offset+length) of `disk` into the file `out`."""
    buf = ctypes.create_string_buffer(1 << 20)
    done = 0
    while done < length:
        n = min(len(buf), length - done)
        lib.read(disk, offset + done, buf, n)
        os.pwrite(out, buf.raw[:n], offset + done)
        done += n
    return done


def pages(call, size, max_ranges):
    """Pages through `call(offset, length, ranges, max, n, processed)` like
    QueryChangesVirtualDisk; yields every range."""
    ranges = (Range * max_ranges)()
    offset, count = 0, 0
    while offset < size:
        n, processed = c_size_t(), c_uint64()
        call(offset, size - offset, ranges, max_ranges, byref(n), byref(processed))
        for r in ranges[:n.value]:
            yield r.offset, r.length
        if processed.value == 0:
            raise RefpointError("no progress at offset %d" % offset)
        offset += processed.value
        count += 1
    print("pages=%d" % count)


def checkpoint_view(lib, disk, name, state):
    cp = c_uint64()
    lib.checkpoint_create(disk, REFPOINT_CHECKPOINT_RECOVERY, byref(cp))
    view = lib.open("%s@checkpoint-%d" % (name, cp.value), state, REFPOINT_OPEN_READ_ONLY)
    return cp.value, view


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lib", default="librefpoint.so.1")
    p.add_argument("--state", help="state directory (default $REFPOINT_HOME)")
    p.add_argument("--disk", required=True, help="MACHINE/DISK")
    p.add_argument("--out", required=True, help="the backup, a raw file")
    p.add_argument("--write", action="store_true", help="write a few blocks before the incremental")
    a = p.parse_args()
    lib = Library(a.lib)
    print("librefpoint %s" % lib.lib.refpoint_version().decode())

    disk = lib.open(a.disk, a.state)
    info = Info()
    lib.get_info(disk, byref(info))
    if not info.tracking_enabled:
        lib.tracking_enable(disk, 0)
    size = info.virtual_size

    # 1. Full: the frozen view of a recovery checkpoint, holes skipped.
    cp, view = checkpoint_view(lib, disk, a.disk, a.state)
    out = os.open(a.out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.ftruncate(out, size)
    full = sum(copy(lib, view, out, o, n) for o, n in
               pages(lambda *x: lib.allocation(view, *x), size, 4))
    lib.close(view)
    rp = c_uint64()
    lib.checkpoint_convert(disk, cp, byref(rp))
    print("full_bytes=%d" % full)

    # 2. The guest writes.
    if a.write:
        for i in range(8):
            data = bytes([0x40 + i]) * 8192
            lib.write(disk, (i * 7919 * 4096) % (size - 8192), data, len(data))
        lib.flush(disk)

    # 3. Incremental: what changed since the reference point.
    since = ctypes.create_string_buffer(REFPOINT_ID_MAX)
    until = ctypes.create_string_buffer(REFPOINT_ID_MAX)
    lib.reference_point_rct_id(disk, rp.value, since, REFPOINT_ID_MAX)
    cp, view = checkpoint_view(lib, disk, a.disk, a.state)
    lib.checkpoint_rct_id(disk, cp, until, REFPOINT_ID_MAX)
    changed = sum(copy(lib, view, out, o, n) for o, n in pages(
        lambda *x: lib.query_changes(disk, since.value, until.value, *x), size, 2))
    lib.close(view)
    lib.checkpoint_convert(disk, cp, byref(rp))
    os.close(out)
    lib.close(disk)
    print("incremental_bytes=%d" % changed)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RefpointError as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(1)
