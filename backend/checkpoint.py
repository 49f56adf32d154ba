"""Checkpoints: geometry, occupancy, optimiser, step, JobSpec and RNG state in one safetensors file; for a
refinement also its scene mapping, its lock (the colour field's config) and the artist's mesh it keeps.

safetensors (tensors + a JSON string table) rather than torch.save: loading
a checkpoint never unpickles anything. Writes go to a temporary file in the
same folder, fsynced and renamed into place, so a crash never leaves half a
file; a server keeps the one before as well (`previous_checkpoint`), so a
checkpoint damaged on disk costs one interval, not the job.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from blender_dreamfusion.shared import JobSpec, MeshData
from blender_dreamfusion.shared.atomic import atomic_write
from blender_dreamfusion.shared.jobspec import GEOMETRY_NAMES

from .geometry import Geometry, GeometryConfig, geometry_class
from .geometry.colour import ColourConfig, ColourField
from .geometry.locked import LockedGeometry
from .occupancy import OccupancyGrid
from .scene_mapping import SceneMapping
from .trainer import Trainer, TrainerConfig, TrainerState

#: A locked start mesh's arrays, as the checkpoint stores them.
MESH_PARTS = ("positions", "triangles", "colors")

FORMAT = "dreamfusion-checkpoint/1"


class CheckpointError(RuntimeError):
    pass


def previous_checkpoint(path: str | Path) -> Path:
    """Where `save_checkpoint(..., keep_previous=True)` keeps the checkpoint before `path`."""
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


def save_checkpoint(trainer: Trainer, path: str | Path, keep_previous: bool = False) -> Path:
    path = Path(path)
    state = trainer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for name, value in state.field.items():
        tensors[f"field.{name}"] = value
    for name, value in state.occupancy.items():
        tensors[f"occupancy.{name}"] = value
    for index, values in state.optimizer["state"].items():
        for key, value in values.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value)
    tensors["rng"] = state.rng
    if state.fixed_mesh is not None:
        for part in MESH_PARTS:
            tensors[f"fixed_mesh.{part}"] = torch.from_numpy(np.array(getattr(state.fixed_mesh, part)))
    if state.fixed_uvs is not None:
        tensors["fixed_mesh.uvs"] = torch.from_numpy(np.array(state.fixed_uvs, np.float32))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {
        "format": FORMAT,
        "step": str(state.step),
        "spec": json.dumps(trainer.spec.to_dict()),
        # The type tag loading dispatches on (the geometry registry's name), and that geometry's config.
        "geometry": trainer.field.name,
        "field_config": trainer.field.config.to_json(),
        "param_groups": json.dumps(state.optimizer["param_groups"]),
        "cull_pays": json.dumps(state.cull_pays),
        "mapping": state.mapping.to_json(),
        "schedule_from": json.dumps(list(state.schedule_from)),
    }
    if state.lock is not None:
        metadata["lock"] = state.lock.to_json()
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata),
                        keep_previous=previous_checkpoint(path) if keep_previous else None)


def read_checkpoint_spec(path: str | Path) -> tuple[JobSpec, int]:
    """The JobSpec and step stored in a checkpoint, without loading its tensors."""
    from safetensors import safe_open

    meta = _metadata(path, safe_open)
    stored = json.loads(meta["spec"])
    stored["geometry"] = _geometry_class(meta).name  # written before the knob existed: a density field
    return JobSpec.from_dict(stored), int(meta["step"])


def continuing_spec(spec: JobSpec, checkpoint: str | Path | dict[str, str]) -> JobSpec:
    """`spec` as a job continuing `checkpoint` (a path, or its metadata) runs it: a locked shape (a texture-only
    job's) stays locked, whatever `spec` says. The one place this is decided."""
    if not isinstance(checkpoint, dict):
        from safetensors import safe_open

        checkpoint = _metadata(checkpoint, safe_open)
    return dataclasses.replace(spec, lock_geometry=spec.lock_geometry or "lock" in checkpoint)


def load_checkpoint(path: str | Path, spec: JobSpec, guidance, device="cpu",
                    config: TrainerConfig | None = None, resume: bool = True) -> Trainer:
    """A trainer in the checkpoint's state, continuing toward `spec.steps` with `spec`'s settings.

    The geometry, scene mapping and lock are the checkpoint's, whatever `spec` says: a job and what continues
    it keep the geometry and framing they started with, and a locked shape stays locked. `resume`: the same
    job carrying on (the very same draws and schedules follow); False for a new job continuing it, which
    draws from its own seed and runs its schedules on from where the checkpoint's stopped
    (`schedule_progress`).
    """
    from safetensors import safe_open

    meta = _metadata(path, safe_open)
    geometry = _geometry_config(meta)
    spec = continuing_spec(spec, meta)
    if geometry.geometry in GEOMETRY_NAMES:  # the spec says what trains (one no client may name only builds)
        spec = spec.replace(geometry=geometry.geometry)
    config = dataclasses.replace((config or TrainerConfig()).with_geometry_config(geometry),
                                 geometry=geometry.geometry)
    trainer = Trainer(spec, guidance, device, config)
    trainer.load_state_dict(_state(meta, load_file(str(path), device="cpu")), resume=resume)
    return trainer


def _state(meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> TrainerState:
    """The trainer state a checkpoint file holds (keys missing from older checkpoints take their defaults)."""
    optimizer: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in _prefixed(tensors, "optim.").items():
        index, name = key.split(".", 1)
        optimizer.setdefault(int(index), {})[name] = value
    saved = json.loads(meta.get("schedule_from", "[0, 0.0]"))
    return TrainerState(
        field=_prefixed(tensors, "field."), occupancy=_prefixed(tensors, "occupancy."),
        optimizer={"state": optimizer, "param_groups": json.loads(meta["param_groups"])}, rng=tensors["rng"],
        step=int(meta["step"]), steps=int(json.loads(meta["spec"])["steps"]),
        schedule_from=(int(saved[0]), float(saved[1])), cull_pays=bool(json.loads(meta.get("cull_pays", "false"))),
        mapping=SceneMapping.from_json(meta["mapping"]) if "mapping" in meta else SceneMapping(),
        fixed_mesh=MeshData(*(tensors[f"fixed_mesh.{part}"].numpy() for part in MESH_PARTS))
        if "fixed_mesh.positions" in tensors else None,
        fixed_uvs=tensors["fixed_mesh.uvs"].numpy() if "fixed_mesh.uvs" in tensors else None,
        lock=ColourConfig.from_json(meta["lock"]) if "lock" in meta else None)


def load_field(path: str | Path, device="cpu") -> tuple[Geometry, OccupancyGrid]:
    """The geometry and occupancy grid in a checkpoint, without its guidance model: enough to extract a mesh."""
    from safetensors import safe_open

    meta = _metadata(path, safe_open)
    field = _geometry_config(meta).build()
    field.set_progress(int(meta["step"]), json.loads(meta["spec"])["steps"])
    if "lock" in meta:
        field = LockedGeometry(field, ColourField(ColourConfig.from_json(meta["lock"])))
    tensors = load_file(str(path), device="cpu")
    field.load_state_dict(_prefixed(tensors, "field."))
    mask = tensors["occupancy.mask"]
    occupancy = OccupancyGrid(field.bound, mask.shape[0])
    occupancy.load_state_dict(_prefixed(tensors, "occupancy."))
    return field.to(device), occupancy.to(device)


def _geometry_class(meta: dict[str, str]) -> type[Geometry]:
    name = meta.get("geometry", "density")  # checkpoints from before the tag hold a density field
    try:
        return geometry_class(name)
    except KeyError as exc:
        raise CheckpointError(f"checkpoint {exc.args[0]}") from None


def _geometry_config(meta: dict[str, str]) -> GeometryConfig:
    return _geometry_class(meta).config_class.from_json(meta["field_config"])


def _metadata(path, safe_open) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # missing file, or safetensors' own error type for a corrupt header
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {exc}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a DreamFusion checkpoint (format {meta.get('format')!r})")
    return meta


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
