"""A finished mesh made into an asset an artist can use: smoothed, decimated, UV-unwrapped and baked.

Streamed previews skip all of this (they stay raw marching-cubes meshes with vertex colours); only the
final result goes through `finish_asset`. Every step runs on the CPU: no GPU rasteriser is needed.
"""

from .final import Asset, asks_for_asset, finish_asset

__all__ = ["Asset", "asks_for_asset", "finish_asset"]
