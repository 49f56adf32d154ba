"""A geometry that is not a point-query field, added in this module only (issue 34): a fixed triangle mesh (an
icosphere) with a learnable colour per vertex, which renders itself with its own small ray caster and extracts
itself as its own mesh. The trainer, checkpoints and extraction take it as they take the fields: it trains for a
few SDS steps, streams, extracts, and resumes from a checkpoint to the very same colours as a straight run.

It never answers a point query (`forward` raises), so nothing on the way may ask it for density or albedo at
points: no occupancy upkeep, no volume rendering, no marching cubes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
import trimesh
from torch import nn

from blender_dreamfusion.backend.cameras import camera_rays
from blender_dreamfusion.backend.checkpoint import load_checkpoint, load_field, save_checkpoint
from blender_dreamfusion.backend.extract import Extraction, extract_mesh
from blender_dreamfusion.backend.geometry import Geometry, GeometryConfig
from blender_dreamfusion.backend.geometry.registry import GEOMETRIES
from blender_dreamfusion.backend.guidance import load_guidance
from blender_dreamfusion.backend.renderer import Render
from blender_dreamfusion.backend.trainer import Trainer, TrainerConfig
from blender_dreamfusion.shared import JobSpec, MeshData

NAME = "test-vertex-mesh"


@dataclass(frozen=True)
class VertexMeshConfig(GeometryConfig):
    geometry: ClassVar[str] = NAME
    radius: float = 0.5
    subdivisions: int = 2


class VertexMesh(Geometry):
    """An icosphere whose vertices carry learnable sRGB logits; the shape itself stays as built."""

    config_class = VertexMeshConfig

    def __init__(self, config: VertexMeshConfig = VertexMeshConfig()):
        super().__init__()
        self.config = config
        sphere = trimesh.creation.icosphere(subdivisions=config.subdivisions, radius=config.radius)
        self.register_buffer("vertices", torch.as_tensor(sphere.vertices, dtype=torch.float32))
        self.register_buffer("faces", torch.as_tensor(sphere.faces, dtype=torch.int64))
        self.logits = nn.Parameter(torch.zeros(len(sphere.vertices), 3))

    def forward(self, points):
        raise NotImplementedError("a mesh answers no point queries")

    def grid_parameters(self):
        return [self.logits]

    def network_parameters(self):
        return []

    def update_occupancy(self, occupancy, generator) -> None:
        pass  # its ray caster skips nothing

    def render(self, cameras, resolution: int, *, shading: str = "albedo", ambient=0.1, background=None,
               occupancy=None, generator=None, with_orientation: bool = True, config=None) -> Render:
        b = len(cameras)
        origins, dirs = (x.reshape(b, -1, 3) for x in camera_rays(cameras, resolution))
        corners = self.vertices[self.faces]  # (F, 3, 3)
        t, u, v = _intersect(origins.reshape(-1, 3), dirs.reshape(-1, 3), corners)
        hit = torch.isfinite(t.min(dim=1).values)
        face = t.argmin(dim=1)
        u, v = u.gather(1, face[:, None])[:, 0], v.gather(1, face[:, None])[:, 0]
        bary = torch.stack([1 - u - v, u, v], dim=-1)
        colour = (torch.sigmoid(self.logits)[self.faces[face]] * bary[..., None]).sum(1)  # (N, 3)
        edges = corners[:, 1:] - corners[:, :1]
        normal = nn.functional.normalize(torch.cross(edges[:, 0], edges[:, 1], dim=-1), dim=-1)[face]
        points = origins.reshape(-1, 3) + dirs.reshape(-1, 3) * t.min(dim=1).values.nan_to_num(0, 0, 0)[:, None]
        light = nn.functional.normalize(cameras.lights.repeat_interleave(resolution * resolution, 0) - points, dim=-1)
        ambient = torch.as_tensor(ambient, dtype=torch.float32).reshape(-1, 1).expand(b, 1)
        ambient = ambient.repeat_interleave(resolution * resolution, 0)
        lit = ambient + (1 - ambient) * (normal * light).sum(-1, keepdim=True).clamp(min=0)
        rgb = {"albedo": colour, "lambertian": colour * lit, "textureless": lit.expand(-1, 3)}[shading]
        back = torch.ones(b, 3) if background is None else background
        mask = hit[:, None].float()
        rgb = rgb * mask + back.repeat_interleave(resolution * resolution, 0) * (1 - mask)

        def image(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, resolution, resolution, -1).permute(0, 3, 1, 2)

        return Render(rgb=image(rgb), opacity=image(mask), depth=image(t.min(dim=1).values.nan_to_num(0, 0, 0)[:, None]
                                                                       * mask), normal=image(normal * mask),
                      orientation=torch.zeros(()), evaluated=int(hit.sum()), surface_points=points[hit].detach())

    def extract(self, resolution: int, occupancy=None, iso=None) -> Extraction:
        colours = (torch.sigmoid(self.logits.detach()) * 255).round().to(torch.uint8).numpy()
        rgba = np.concatenate([colours, np.full((len(colours), 1), 255, np.uint8)], axis=1)
        return Extraction(MeshData.coerce(self.vertices.numpy(), self.faces.numpy(), rgba), 0.0, "")


def _intersect(origins: torch.Tensor, dirs: torch.Tensor, corners: torch.Tensor):
    """Möller-Trumbore, every ray against every triangle: (N, F) distances (inf where missed) and barycentrics."""
    v0, e1, e2 = corners[:, 0], corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    p = torch.cross(dirs[:, None].expand(-1, len(v0), -1), e2[None].expand(len(dirs), -1, -1), dim=-1)
    det = (e1[None] * p).sum(-1)
    inv = 1.0 / torch.where(det.abs() > 1e-9, det, torch.ones_like(det))
    s = origins[:, None] - v0[None]
    u = (s * p).sum(-1) * inv
    q = torch.cross(s, e1[None].expand_as(s), dim=-1)
    v = (dirs[:, None] * q).sum(-1) * inv
    t = (e2[None] * q).sum(-1) * inv
    valid = (det.abs() > 1e-9) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    return torch.where(valid, t, torch.full_like(t, float("inf"))), u, v


@pytest.fixture
def registered():
    """The geometry is registered for this test only: the wire's geometry names stay the registry's."""
    GEOMETRIES.add(NAME, VertexMesh)
    VertexMesh.name = NAME
    yield
    GEOMETRIES.pop(NAME)


@pytest.fixture(scope="module")
def guidance(tiny_sd):
    return load_guidance(str(tiny_sd), torch.device("cpu"))


def _spec(tiny_sd) -> JobSpec:
    return JobSpec(prompt="a red sphere", model=str(tiny_sd), seed=11, steps=6, render_resolution=32,
                   mesh_resolution=32, stream_every=2, learning_rate=0.05)


def test_a_mesh_geometry_trains_streams_extracts_and_resumes(registered, guidance, tiny_sd, tmp_path):
    config = TrainerConfig(geometry=NAME, occupancy_every=2)
    straight = Trainer(_spec(tiny_sd), guidance, config=config)
    assert isinstance(straight.field, VertexMesh)
    before = straight.field.logits.detach().clone()
    streamed = []
    assert straight.run(on_stream=streamed.append) is True
    learnt = straight.field.logits.detach()
    assert not torch.equal(before, learnt)  # SDS through its own renderer taught the colours

    # Streamed and final meshes are its own mesh, coloured as it learnt; extraction asked it, not a field.
    assert [s.step for s in streamed] == [2, 4]
    final = straight.snapshot()
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    assert final.extraction.mesh.vertex_count == len(sphere.vertices)
    expected = (torch.sigmoid(learnt) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(final.extraction.mesh.colors[:, :3], expected)
    assert final.preview.shape == (96, 96, 3) and final.preview.std() > 0  # the sphere against the background

    # Stopped at step 3, checkpointed, resumed without being told the geometry: the checkpoint's tag builds it.
    first = Trainer(_spec(tiny_sd), guidance, config=config)
    assert first.run(should_stop=lambda: first.step >= 3) is False
    path = save_checkpoint(first, tmp_path / "mesh.checkpoint.safetensors")
    resumed = load_checkpoint(path, _spec(tiny_sd), guidance, config=TrainerConfig(occupancy_every=2))
    assert isinstance(resumed.field, VertexMesh) and resumed.step == 3
    assert resumed.spec.geometry == "sdf"  # what the spec says stays: clients cannot name this geometry
    resumed.run()
    assert torch.allclose(resumed.field.logits, learnt, atol=1e-6)
    # And a checkpoint alone (no prior loaded) extracts it.
    field, _ = load_field(path)
    assert isinstance(field, VertexMesh)
    assert extract_mesh(field, 32).mesh.vertex_count == len(sphere.vertices)
