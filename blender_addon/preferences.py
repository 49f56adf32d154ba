"""Add-on preferences: where the backend runs (launched here, or a remote address with CURVE keys)."""

import bpy

from .addon_core.session import SESSION
from .shared.client import DEFAULT_ADDRESS
from .shared.jobspec import BUILTIN_MODELS, DEFAULT_MODEL


def _backend_setting_changed(self, context) -> None:
    # An error about the previous settings would otherwise stay on the status line until the next Generate.
    SESSION.settings_changed()
    from .client_loop import redraw_sidebar
    redraw_sidebar()


class DreamFusionPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_mode: bpy.props.EnumProperty(
        update=_backend_setting_changed,
        name="Backend", default="LOCAL",
        items=[("LOCAL", "Local", "Start dreamfusion-backend on this machine (loopback only) and stop it on exit"),
               ("REMOTE", "Remote", "Connect to a backend that is already running, e.g. on a GPU server")])
    backend_executable: bpy.props.StringProperty(
        update=_backend_setting_changed,
        name="Backend executable", subtype="FILE_PATH",
        description="The dreamfusion-backend script, or the Python of the environment the backend is installed "
                    "in (e.g. ~/dreamfusion/.venv/bin/python). Empty: dreamfusion-backend on PATH")
    device: bpy.props.EnumProperty(
        update=_backend_setting_changed,
        name="Device", default="auto",
        items=[("auto", "Auto", "CUDA if available, else CPU"), ("cuda", "CUDA", "NVIDIA GPU"),
               ("cpu", "CPU", "Slow, but works everywhere")])
    data_dir: bpy.props.StringProperty(
        update=_backend_setting_changed,
        name="Job folder", subtype="DIR_PATH",
        description="Where the local backend keeps jobs, checkpoints and results. Empty: its default "
                    "(~/.local/share/dreamfusion-blender)")
    model_folders: bpy.props.StringProperty(
        update=_backend_setting_changed,
        name="Model folders",
        description="Folders with local diffusers models the local backend may load, separated by ';' (the "
                    "default model's folder and the scene's model folder are allowed anyway). A backend loads no "
                    "file outside the folders it is told about")
    start_on_generate: bpy.props.BoolProperty(
        name="Start backend on Generate", default=True,
        description="In local mode, Generate starts the backend if it is not running")
    address: bpy.props.StringProperty(
        update=_backend_setting_changed,
        name="Address", default=DEFAULT_ADDRESS,
        description="Remote backend's ZeroMQ address, tcp://HOST:PORT")
    server_key: bpy.props.StringProperty(
        update=_backend_setting_changed,
        name="Server public key", subtype="FILE_PATH",
        description="server.key from `dreamfusion-backend keys generate` (needed for a non-loopback backend)")
    client_secret_key: bpy.props.StringProperty(
        update=_backend_setting_changed,
        name="Client secret key", subtype="FILE_PATH",
        description="clients/NAME.key_secret from `dreamfusion-backend keys generate`")
    keep_candidates: bpy.props.BoolProperty(
        name="Keep unchosen candidates", default=False,
        description="Best of N: after the choice, keep the candidates that were not chosen as hidden objects "
                    "(off: they are removed)")
    default_model: bpy.props.StringProperty(
        name="Default model", default=DEFAULT_MODEL,
        description="Model a scene uses until you choose one in its Guidance settings: a built-in prior ("
                    + ", ".join(BUILTIN_MODELS) + "), a diffusers repo id, or a local folder")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "backend_mode", expand=True)
        if self.backend_mode == "LOCAL":
            layout.prop(self, "backend_executable")
            layout.prop(self, "device")
            layout.prop(self, "data_dir")
            layout.prop(self, "model_folders")
            layout.prop(self, "start_on_generate")
        else:
            layout.prop(self, "address")
            layout.prop(self, "server_key")
            layout.prop(self, "client_secret_key")
        layout.prop(self, "default_model")
        layout.prop(self, "keep_candidates")


def get(context=None):
    """This add-on's preferences."""
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


_classes = (DreamFusionPreferences,)


register, unregister = bpy.utils.register_classes_factory(_classes)
