"""The add-on's own pure-Python logic: no `bpy`, so it is tested without Blender.

Job tracking (`job_tracker`), refinements' specs and frames (`refine`), headless batches (`batch_options`,
`batch_plan`, `batch_runner`, `prompt_file`), the local backend launcher (`local_backend`), the viewport
overlay's geometry (`overlay_geometry`), the check of a written .glb (`glb`) and the sidebar's small choices
(`panel_text`: which job the progress box follows, how a long status line wraps). The backend never imports
it. It reaches the protocol as `..shared`, which resolves both where the package is installed
(`blender_dreamfusion.addon_core` beside `blender_dreamfusion.shared`) and inside the built extension
(`addon_core/` beside the vendored `shared/`).
"""
