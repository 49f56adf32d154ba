"""Hypothesis strategies for valid JobSpecs and messages, derived from the declared types and limits.

Deriving them from the dataclass fields means a new message type or field is
covered by the round-trip tests without touching this file.
"""

from __future__ import annotations

import dataclasses
import typing
import types

import numpy as np
from hypothesis import strategies as st

from blender_dreamfusion.shared import JobSpec, MeshData, jobspec_knobs
from blender_dreamfusion.shared.errors import ProtocolError
from blender_dreamfusion.shared.mesh import CornerUVs, Texture, VertexColors, check_init_mesh
from blender_dreamfusion.shared.jobspec import MAX_CANDIDATES
from blender_dreamfusion.shared.messages import CHOOSERS, ID_PATTERN, Chosen, Finished, Image, Message, Submit, Update
from blender_dreamfusion.shared.wirefields import Rule, field_rule, resolved_hints

# No control characters other than tab/newline, no lone surrogates.
TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters=[chr(c) for c in range(32) if c not in (9, 10)])
MODELS = st.sampled_from(["toy-shapes", "stabilityai/stable-diffusion-2-1-base", "runwayml/sd-v1.5",
                          "/models/sd21", "./weights/sd", "~/sd", "C:\\models\\sd", "../up/sd"])


def _knob_value(name, knob):
    if knob.value_type == "text":
        min_size = 1 if knob.required else 0
        text = st.text(TEXT, min_size=min_size, max_size=min(knob.max_len, 40))
        return text.filter(str.strip) if knob.required else text
    if knob.value_type == "bool":
        return st.booleans()
    if knob.value_type == "choice":
        return st.sampled_from(knob.choices)
    if knob.value_type == "int" and knob.values:
        return st.sampled_from(knob.values)
    if knob.value_type == "int" and knob.least_on is not None:  # 0 (off), or from least_on up
        return st.just(0) | st.integers(knob.least_on, int(knob.maximum))
    if knob.value_type == "int":
        return st.integers(int(knob.minimum), int(knob.maximum))
    if knob.value_type == "float":
        return st.floats(knob.minimum, knob.maximum, allow_nan=False)
    assert knob.value_type == "range"

    @st.composite
    def pair(draw):
        low = draw(st.floats(knob.minimum, knob.maximum, allow_nan=False))
        top = knob.maximum if knob.max_span is None else min(knob.maximum, low + knob.max_span)
        high = draw(st.floats(low, top, allow_nan=False))
        return (low, high)

    return pair()


@st.composite
def jobspecs(draw) -> JobSpec:
    values = {name: draw(_knob_value(name, knob)) for name, knob in jobspec_knobs().items()}
    values["model"] = draw(MODELS)
    if values["init"] == "blob":
        values["init_from"] = ""
        values["lock_geometry"] = False
    elif values["init"] == "checkpoint" and not values["init_from"].strip():
        values["init_from"] = "job-1234"
    if values["init"] == "mesh" and values["lock_geometry"]:  # the start mesh is kept vertex for vertex
        values["smoothing"] = values["face_count"] = 0
    if not values["view_dependent"]:  # Perp-Neg blends the view prompts
        values["perp_neg"] = 0.0
    if values["shading_albedo"] + values["shading_lambertian"] + values["shading_textureless"] <= 0:
        values["shading_lambertian"] = 1.0
    return JobSpec.from_dict(values)  # options by their flat names, as a panel sends them


@st.composite
def meshes(draw, max_vertices: int = 50) -> MeshData:
    n = draw(st.integers(0, max_vertices))
    m = draw(st.integers(0, 60)) if n else 0
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    positions = rng.normal(size=(n, 3)).astype(np.float32)
    triangles = rng.integers(0, max(n, 1), size=(m, 3)).astype(np.int32)
    colors = rng.integers(0, 256, size=(n, 4)).astype(np.uint8)
    return MeshData(positions, triangles, colors)


@st.composite
def init_meshes(draw) -> MeshData:
    """A start mesh `Submit` accepts (`check_init_mesh`): at least one triangle with area."""
    mesh = draw(meshes())
    try:
        check_init_mesh(mesh)
        usable = True
    except ProtocolError:  # no triangles, or only degenerate ones (random corners may repeat an index)
        usable = False
    if not usable:
        positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
        mesh = MeshData(positions, np.array([[0, 1, 2]], np.int32), np.full((3, 4), 128, np.uint8))
    return mesh


@st.composite
def vertex_colors(draw) -> VertexColors:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return VertexColors(rng.integers(0, 256, size=(draw(st.integers(0, 50)), 4)).astype(np.uint8))


@st.composite
def submits(draw) -> Submit:
    """Submits with and without a start mesh (one travels only with init = mesh and no init_from)."""
    spec = draw(jobspecs())
    if draw(st.booleans()):
        kept = {"smoothing": 0, "face_count": 0} if spec.lock_geometry else {}  # a locked start mesh is kept as is
        spec = spec.replace(init="mesh", init_from="", **kept)
        mesh = draw(init_meshes())
        uvs = None
        if draw(st.booleans()):  # the mesh's own UVs, one per corner
            rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
            uvs = CornerUVs(rng.uniform(-1, 2, size=(3 * mesh.triangle_count, 2)).astype(np.float32))
        return Submit(spec=spec, init_mesh=mesh, init_uvs=uvs, request_id=draw(st.none() | st.just("r-1")))
    return Submit(spec=spec, request_id=draw(st.none() | st.just("r-2")))


@st.composite
def images(draw) -> Image:
    h, w = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return Image(rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8))


def _for_type(tp, limits):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in typing.get_args(tp) if a is not type(None))
        return st.none() | _for_type(inner, limits)
    if origin is list:
        return st.lists(_for_type(typing.get_args(tp)[0], Rule()), max_size=3)
    if origin is dict:
        key = st.text(TEXT, max_size=10)
        return st.dictionaries(key, _for_type(typing.get_args(tp)[1], limits), max_size=3)
    if tp is JobSpec:
        return jobspecs()
    if tp is MeshData:
        return meshes()
    if tp is VertexColors:
        return vertex_colors()
    if tp is Image:
        return images()
    if dataclasses.is_dataclass(tp):
        return dataclass_instances(tp)
    if tp is str:
        if limits.choices:
            return st.sampled_from(limits.choices)
        if limits.pattern:
            return st.from_regex(limits.pattern, fullmatch=True)
        return st.text(TEXT, max_size=min(limits.max_len, 40))
    if origin is typing.Literal:
        return st.sampled_from(limits.choices or typing.get_args(tp))
    if tp is bool:
        return st.booleans()
    if tp is int:
        low = int(limits.minimum) if limits.minimum is not None else -(2**40)
        high = int(limits.maximum) if limits.maximum is not None else 2**40
        return st.integers(low, high)
    if tp is float:
        return st.floats(limits.minimum, limits.maximum, allow_nan=False, allow_infinity=False)
    raise AssertionError(f"no strategy for {tp!r}")


def dataclass_instances(cls):
    hints = resolved_hints(cls)
    kwargs = {f.name: _for_type(hints[f.name], field_rule(f)) for f in dataclasses.fields(cls) if f.init}
    return st.builds(cls, **kwargs)


def messages_of(cls: type[Message]):
    if cls is Submit:
        return submits()
    if cls is Update:  # exactly one of mesh and vertex_colors
        return _updates()
    if cls is Finished:  # a texture has one UV per corner of the mesh's triangles
        return _finisheds()
    if cls is Chosen:  # one score per seed, and the chosen one among them
        return _chosens()
    return dataclass_instances(cls)


@st.composite
def _finisheds(draw) -> Finished:
    hints = resolved_hints(Finished)
    kwargs = {f.name: draw(_for_type(hints[f.name], field_rule(f))) for f in dataclasses.fields(Finished)
              if f.init and f.name not in ("mesh", "texture")}
    mesh = draw(meshes())
    texture = draw(st.none() | textures(3 * mesh.triangle_count)) if mesh.triangle_count else None
    return Finished(**kwargs, mesh=mesh, texture=texture)


@st.composite
def textures(draw, corners: int) -> Texture:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    h, w, c = draw(st.integers(1, 16)), draw(st.integers(1, 16)), draw(st.sampled_from([3, 4]))
    return Texture(rng.uniform(-0.5, 1.5, size=(corners, 2)).astype(np.float32),
                   rng.integers(0, 256, size=(h, w, c)).astype(np.uint8))


@st.composite
def _chosens(draw) -> Chosen:
    count = draw(st.integers(1, MAX_CANDIDATES))
    return Chosen(job_id=draw(st.from_regex(ID_PATTERN, fullmatch=True)), step=draw(st.integers(0, 10**9)),
                  candidate=draw(st.integers(0, count - 1)), by=draw(st.sampled_from(CHOOSERS)),
                  seeds=draw(st.lists(st.integers(0, 2**32 - 1), min_size=count, max_size=count)),
                  scores=draw(st.lists(st.floats(-1e6, 1e6), min_size=count, max_size=count)),
                  request_id=draw(st.none() | st.just("r-3")))


@st.composite
def _updates(draw) -> Update:
    hints = resolved_hints(Update)
    kwargs = {f.name: draw(_for_type(hints[f.name], field_rule(f))) for f in dataclasses.fields(Update)
              if f.init and f.name not in ("mesh", "vertex_colors", "candidate", "seed")}
    if draw(st.booleans()):  # a best-of-N candidate's update: its index and seed together
        kwargs["candidate"], kwargs["seed"] = draw(st.integers(0, MAX_CANDIDATES - 1)), draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        return Update(**kwargs, mesh=draw(meshes()))
    return Update(**kwargs, vertex_colors=draw(vertex_colors()))


# --- malformed messages: valid encodings, mutated ----------------------------------

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                           max_leaves=8)


@st.composite
def mutated_frames(draw, valid: list[list[bytes]], header_keys: list[str], values=JSON_VALUES):
    """One of the `valid` frame lists, mutated 1-4 times: byte flips, truncation, dropped, duplicated or
    replaced frames, and header fields (from `header_keys`) set to arbitrary JSON `values`."""
    import json

    frames = list(draw(st.sampled_from(valid)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "truncate", "drop", "dup", "replace", "json"]))
        index = draw(st.integers(0, len(frames) - 1)) if frames else 0
        if action == "flip" and frames and frames[index]:
            data = bytearray(frames[index])
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
            frames[index] = bytes(data)
        elif action == "truncate" and frames:
            frames[index] = frames[index][: draw(st.integers(0, len(frames[index])))]
        elif action == "drop" and frames:
            frames.pop(index)
        elif action == "dup" and frames:
            frames.insert(index, frames[index])
        elif action == "replace" and frames:
            frames[index] = draw(st.binary(max_size=64))
        elif action == "json" and len(frames) > 1:
            try:
                header = json.loads(frames[1])
            except ValueError:
                header = {}
            header = header if isinstance(header, dict) else {}
            header[draw(st.sampled_from(header_keys))] = draw(values)
            frames[1] = json.dumps(header).encode()
    return frames
