"""What a written .glb holds: the add-on checks an export before it reports success.

Blender's glTF exporter writes a valid, empty file (132 bytes: an asset header, no meshes) when the objects it
was asked for are filtered out (not selected, hidden, in another scene), and says nothing. Reading the file's
JSON chunk back is the only check that does not depend on how the exporter filters.
"""

from __future__ import annotations

import json
import struct

GLB_MAGIC = b"glTF"
JSON_CHUNK = 0x4E4F534A  # "JSON", little-endian


def glb_document(data: bytes) -> dict:
    """The glTF JSON of a GLB file's bytes. ValueError if `data` is not a GLB file."""
    if len(data) < 20 or data[:4] != GLB_MAGIC:
        raise ValueError("not a glTF binary (.glb) file")
    length, chunk_type = struct.unpack_from("<II", data, 12)
    if chunk_type != JSON_CHUNK or 20 + length > len(data):
        raise ValueError("a .glb file without its JSON chunk")
    return json.loads(data[20:20 + length])


def glb_vertex_count(data: bytes) -> int:
    """Vertices in every mesh primitive of a GLB file's bytes (0: no mesh at all). ValueError if `data` is not
    a GLB file."""
    document = glb_document(data)
    accessors = document.get("accessors", [])
    count = 0
    for mesh in document.get("meshes", []):
        for primitive in mesh.get("primitives", []):
            index = primitive.get("attributes", {}).get("POSITION")
            if isinstance(index, int) and 0 <= index < len(accessors):
                count += int(accessors[index].get("count", 0))
    return count
