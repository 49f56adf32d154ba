"""The toy-objects world (#35): each object's analytic geometry is what it declares (true size, bottom, front),
and the scorer judges a mesh against it at true size and place: object, size, drip, colour, pattern, fronts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blender_dreamfusion.backend.toy.object_score import score
from blender_dreamfusion.backend.toy.object_vocab import ObjectPrompt, parse_object_prompt
from blender_dreamfusion.backend.toy.objects import (COMPOSITES, OBJECTS, PRIMITIVES, ObjectField, surface_points,
                                                     true_mesh)
from blender_dreamfusion.backend.toy.primitives import PrimitiveField
from blender_dreamfusion.backend.toy.vocab import COLOUR_RGB, VocabularyError
from blender_dreamfusion.shared import MeshData

#: Marching cubes at 128^3 over [-1, 1]^3 places a surface within about a grid step (2 / 127 m) of the truth,
#: and may miss a cone's apex or a roof's eave by one more.
GRID_STEP = 2.0 / 127


def test_the_world_has_the_primitives_and_at_least_seven_objects_with_thin_parts_and_fronts():
    assert PRIMITIVES == ("cube", "sphere", "torus", "cone", "cylinder")
    assert len(COMPOSITES) >= 7
    assert {"mug", "table", "chair", "snowman", "mushroom", "lamp", "house"} <= set(COMPOSITES)
    assert {name for name, o in OBJECTS.items() if o.has_front} == {"mug", "chair", "snowman", "house"}


@pytest.mark.parametrize("name", list(OBJECTS))
def test_each_object_has_its_declared_size_and_bottom(name):
    points = surface_points(name).numpy()
    low, high = points.min(axis=0), points.max(axis=0)
    declared = OBJECTS[name]
    assert np.allclose(high - low, declared.extent, atol=2 * GRID_STEP), (name, high - low)
    assert abs(low[2] - declared.bottom) <= GRID_STEP, (name, low[2])
    assert abs((low[0] + high[0]) / 2) < 0.11 and abs((low[1] + high[1]) / 2) < 0.02, "centred on the Z axis"


def test_a_primitive_is_the_very_shape_toy_shapes_draws():
    points = torch.rand(4000, 3) * 2 - 1
    for name in PRIMITIVES:
        ours = ObjectField(name, (0.5, 0.5, 0.5)).density(points)
        theirs = PrimitiveField(name, (0.5, 0.5, 0.5)).density(points)
        assert torch.allclose(ours, theirs), name


def _centroid(name: str, part: str) -> torch.Tensor:
    points = torch.rand(200_000, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return points[OBJECTS[name].part(part).sdf(points) < 0].mean(dim=0)


def test_fronts_face_minus_y_and_the_two_faced_variants_mirror_them():
    assert _centroid("snowman", "nose")[1] < -0.1  # the nose points at the front camera
    assert _centroid("house", "door")[1] < -0.25  # the door is on the front wall
    assert _centroid("chair", "back")[1] > 0.2  # one sits facing the front
    assert _centroid("mug", "handle")[0] > 0.3  # seen from the front, the handle is on the right
    points = torch.rand(10_000, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for name, part, second, axis in (("snowman", "nose", "second nose", 1), ("house", "door", "second door", 1),
                                     ("chair", "back", "second back", 1), ("mug", "handle", "second handle", 0)):
        mirror = torch.ones(3)
        mirror[axis] = -1.0
        one, two = OBJECTS[name].part(part), OBJECTS[name].part(second)
        assert torch.allclose(two.sdf(points * mirror), one.sdf(points), atol=1e-6), name


def test_parts_are_painted_by_their_role():
    field = ObjectField("snowman", COLOUR_RGB["blue"])
    nose_tip, body = torch.tensor([[0.0, -0.2, 0.36]]), torch.tensor([[0.0, 0.0, -0.26]])
    assert torch.allclose(field(nose_tip)[1], torch.tensor([[0.95, 0.5, 0.05]]))  # orange whatever is asked
    assert torch.allclose(field(body)[1], torch.tensor([[0.92, 0.92, 0.92]]))  # a snowman stays white
    mug = ObjectField("mug", COLOUR_RGB["red"], "striped")
    bands = mug(torch.tensor([[0.3, 0.0, 0.05], [0.3, 0.0, 0.15]]))[1]
    assert {tuple(round(v, 2) for v in c) for c in bands.tolist()} == {(0.85, 0.1, 0.1), (0.92, 0.92, 0.92)}


@pytest.mark.parametrize("name, colour, pattern", [("mug", "red", "striped"), ("house", "green", "checkered"),
                                                   ("snowman", None, None), ("cone", "purple", None)])
def test_the_truth_scores_right_and_a_turned_or_two_faced_one_does_not(name, colour, pattern):
    truth = true_mesh(name, COLOUR_RGB[colour or "white"], pattern)
    result = score(truth, name, colour)
    assert result.right(name, colour, pattern), result
    assert result.size_error < 0.01 and result.drip < 0.01, result
    if not OBJECTS[name].has_front:
        assert result.front_error is None and result.two_fronts is None
        return
    assert result.front_error <= 5 and result.two_fronts is False, result
    turned = score(_transformed(truth, np.diag([-1.0, -1.0, 1.0])), name, colour)  # faces +Y
    assert turned.nearest == name and turned.front_error >= 175, turned
    janus = score(true_mesh(name, COLOUR_RGB[colour or "white"], pattern, janus=True), name, colour)
    assert janus.nearest == name and janus.two_fronts is True, janus


def test_size_and_drip_are_measured_against_the_declared_truth():
    truth = true_mesh("table")
    larger = score(_transformed(truth, np.eye(3) * 1.2), "table")
    assert larger.nearest == "table" and larger.size_error == pytest.approx(0.2, abs=0.02)
    drop = np.array([[0.0, 0.0, -0.6], [0.02, 0.0, -0.6], [0.0, 0.02, -0.6]], np.float32)
    drips = np.repeat(drop, 40, axis=0) + np.random.default_rng(0).normal(0, 0.005, (120, 3)).astype(np.float32)
    dripping = MeshData(np.concatenate([truth.positions, drips]), truth.triangles,
                        np.concatenate([truth.colors, np.full((120, 4), 255, np.uint8)]))
    assert score(dripping, "table").drip == pytest.approx(0.15 / 0.65, abs=0.03)  # 0.15 m below a 0.65 m table


def test_the_wrong_colour_and_a_missing_pattern_are_seen():
    red = score(true_mesh("lamp", COLOUR_RGB["red"]), "lamp", "blue")
    assert red.nearest == "lamp" and red.colour_error > 90 and not red.right("lamp", "blue")
    assert red.pattern is None and not red.right("lamp", "red", "checkered")
    grey = score(true_mesh("cube", (0.5, 0.5, 0.5)), "cube", "white")
    assert grey.colour_error >= 45, "grey is not white"
    beige = score(true_mesh("mug", (0.55, 0.48, 0.41)), "mug", "orange")  # orange's hue within 1 degree
    assert beige.colour_error >= 45 and not beige.right("mug", "orange"), "a tint of grey is not orange"
    for colour in COLOUR_RGB:  # a pattern's white cells do not pale its colour
        if colour != "white":
            checks = score(true_mesh("mug", COLOUR_RGB[colour], "checkered"), "mug", colour)
            assert checks.pattern == "checkered" and checks.colour_error <= 5, (colour, checks)


def _transformed(mesh: MeshData, matrix: np.ndarray) -> MeshData:
    return MeshData((mesh.positions @ matrix.T).astype(np.float32), mesh.triangles, mesh.colors)


# --- the words ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt, expected", [
    ("a red mug", ObjectPrompt("mug", "red")),
    ("a striped sphere", ObjectPrompt("sphere", pattern="striped")),
    ("the snowman", ObjectPrompt("snowman")),
    ("  A Blue  Checkered Chair, side view ", ObjectPrompt("chair", "blue", "checkered", "side")),
    ("house", ObjectPrompt("house")),
    ("an orange cone, overhead view", ObjectPrompt("cone", "orange", view="overhead")),
    ("", ObjectPrompt(None)),
])
def test_object_prompts_parse_into_one_canonical_form(prompt, expected):
    parsed = parse_object_prompt(prompt)
    assert parsed == expected
    assert parse_object_prompt(parsed.text()) == parsed


@pytest.mark.parametrize("prompt, words", [
    ("a red dragon", "objects cube, sphere"),
    ("a checkered red mug", "at 'red'"),  # the colour comes before the pattern
    ("a red snowman", "the snowman has its own colours"),
    ("a striped snowman", "the snowman has its own colours"),
    ("a mug, upside view", "colours red, green"),
    ("a teal mug", "at 'teal'"),
])
def test_words_outside_the_vocabulary_are_refused_with_what_is_known(prompt, words):
    with pytest.raises(VocabularyError, match="outside the vocabulary|has its own colours") as info:
        parse_object_prompt(prompt)
    assert words in str(info.value)
    assert "patterns striped, checkered" in str(info.value)
