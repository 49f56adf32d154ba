"""Shared fixtures: a tiny Stable-Diffusion-shaped model on disk, loaded like a real one."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """Folder of a tiny random SD pipeline written with save_pretrained (built from config, no download)."""
    from blender_dreamfusion.backend.tiny_model import write_tiny_sd

    return write_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")
