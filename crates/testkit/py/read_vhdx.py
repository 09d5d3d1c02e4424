"""Reads a VHDX file's whole virtual content with another implementation.

    read_vhdx.py READER OUT TOP [PARENT ...]

READER is `libvhdi` (pyvhdi, from libvhdi-python) or `dissect`
(dissect.hypervisor). TOP is the file to read; a differencing file is read
through its chain, PARENT being its parent, then that one's parent, and so
on to the base. libvhdi is given those parents explicitly (`set_parent`);
dissect finds them itself through each file's parent locator, and this
script checks that it found the same files. The content goes to OUT, raw
(sparse where it reads zeros), exactly the virtual size long. Any failure exits non-zero with the reason
on standard error.
"""

import os
import sys
from pathlib import Path

# Read in pieces of this size, from offsets that are multiples of it: a
# power of two, so no piece crosses a payload block boundary that the
# block size (a power of two, at least 1 MiB) does not also align to.
PIECE = 4 << 20


def copy_out(read_at, size, out):
    """Writes the content to `out`; pieces of zeros are left as holes, so
    a large disk that is mostly zeros takes little space."""
    zeros = bytes(PIECE)
    with open(out, "wb") as f:
        pos = 0
        while pos < size:
            n = min(PIECE, size - pos)
            data = read_at(pos, n)
            if len(data) != n:
                sys.exit(f"short read at {pos}: {len(data)} of {n} bytes")
            if data == zeros[:n]:
                f.seek(n, os.SEEK_CUR)
            else:
                f.write(data)
            pos += n
        f.truncate(size)


def read_libvhdi(out, top, parents):
    import pyvhdi

    # Opened from the base up; each file learns its parent before use.
    files = []
    for path in reversed([top] + parents):
        f = pyvhdi.file()
        f.open(path)
        if files:
            f.set_parent(files[-1])
        files.append(f)
    f = files[-1]
    copy_out(lambda pos, n: f.read_buffer_at_offset(n, pos), f.get_media_size(), out)
    for g in reversed(files):
        g.close()


def read_dissect(out, top, parents):
    from dissect.hypervisor.disk.vhdx import VHDX

    v = VHDX(Path(top))
    layer, found = v, []
    while layer.parent is not None:
        layer = layer.parent
        found.append(layer.path)
    if len(found) != len(parents) or not all(
        os.path.samefile(a, b) for a, b in zip(found, parents)
    ):
        sys.exit(f"dissect resolved the chain to {found}, expected {parents}")

    def read_at(pos, n):
        v.seek(pos)
        return v.read(n)

    copy_out(read_at, v.size, out)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    reader, out, top, parents = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    readers = {"libvhdi": read_libvhdi, "dissect": read_dissect}
    if reader not in readers:
        sys.exit(f"unknown reader {reader!r}: {' or '.join(readers)}")
    readers[reader](out, top, parents)


if __name__ == "__main__":
    main()
