"""The "DreamFusion" tab of the 3D Viewport sidebar."""

import bpy

from .shared import PROTOCOL_TAG, __version__


class VIEW3D_PT_dreamfusion(bpy.types.Panel):
    bl_label = "DreamFusion"
    bl_idname = "VIEW3D_PT_dreamfusion"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "DreamFusion"

    def draw(self, context):
        layout = self.layout
        layout.label(text=f"Version {__version__} ({PROTOCOL_TAG.decode()})")
        layout.label(text="Generation controls are not built yet.", icon="INFO")


_classes = (VIEW3D_PT_dreamfusion,)


def register() -> None:
    for cls in _classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
