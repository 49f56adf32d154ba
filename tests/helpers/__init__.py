"""What the tests share: servers, the add-on driven in `bpy`, real Blender, fields, meshes, strategies."""
