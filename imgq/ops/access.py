"""Random access for the operations that read their input out of order.

`decode` opens images for sequential access so that a pipeline streams through libvips. Flips
top to bottom, rotations and attention crops read lines out of order, which a sequential
loader refuses at encode time ("out of order read"). They render their input first: into
memory when it is small, into a temporary file (deleted with the image) when it is not.
"""

from __future__ import annotations

import pyvips

from imgq.ops.image import Image

#: Decoded sizes up to this are rendered into memory; larger ones go to a temporary file.
IN_MEMORY_BYTES = 64 * 1024 * 1024
_SAMPLE_BYTES = {
    "uchar": 1,
    "char": 1,
    "ushort": 2,
    "short": 2,
    "uint": 4,
    "int": 4,
    "float": 4,
    "double": 8,
    "complex": 8,
    "dpcomplex": 16,
}


def random_access(image: Image) -> Image:
    return image.with_vips(render(image.vips))


def render(src: pyvips.Image) -> pyvips.Image:
    size = src.width * src.height * src.bands * _SAMPLE_BYTES.get(src.format, 8)
    if size <= IN_MEMORY_BYTES:
        return src.copy_memory()
    out = pyvips.Image.new_temp_file("%s.v")
    src.write(out)
    return out
