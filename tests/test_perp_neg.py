"""Perp-Neg, formula by formula, against tensors chosen here; and SDS's noise for v-prediction priors."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from blender_dreamfusion.backend.cameras import make_cameras
from blender_dreamfusion.backend.guidance.base import Guidance
from blender_dreamfusion.backend.guidance.perp_neg import PerpNeg, perp_neg_guidance, perpendicular, view_terms
from blender_dreamfusion.shared import JobSpec
from blender_dreamfusion.shared.errors import SpecError


def _reference(eps_u, eps_pos, eps_negs, weights, scale):
    """The issue's formula, one sample and one negative at a time with plain dot products."""
    out = torch.empty_like(eps_u)
    for b in range(eps_u.shape[0]):
        d0 = (eps_pos[b] - eps_u[b]).flatten().double()
        total = d0.clone()
        for i in range(eps_negs.shape[1]):
            di = (eps_negs[b, i] - eps_u[b]).flatten().double()
            perp = di - (torch.dot(di, d0) / max(float(torch.dot(d0, d0)), 1e-6)) * d0
            total += float(weights[b, i]) * perp
        out[b] = (eps_u[b].flatten().double() + scale * total).view_as(eps_u[b])
    return out


def test_guided_noise_is_the_formula_to_1e_6():
    g = torch.Generator().manual_seed(0)  # float64, so 1e-6 measures the formula, not float32 rounding
    eps_u, eps_pos = torch.randn(3, 4, 8, 8, generator=g).double(), torch.randn(3, 4, 8, 8, generator=g).double()
    eps_negs = torch.randn(3, 2, 4, 8, 8, generator=g).double()
    weights = torch.tensor([[-2.0, -0.3], [0.0, -1.1], [-0.7, 0.0]], dtype=torch.float64)
    got = perp_neg_guidance(eps_u, eps_pos, eps_negs, weights, 7.5)
    assert torch.allclose(got, _reference(eps_u, eps_pos, eps_negs, weights, 7.5), atol=1e-6, rtol=0)
    # perp() leaves nothing along the positive direction, sample by sample.
    perp = perpendicular(eps_negs[:, 0] - eps_u, eps_pos - eps_u)
    assert torch.allclose((perp * (eps_pos - eps_u)).sum(dim=(1, 2, 3)), torch.zeros(3, dtype=torch.float64),
                          atol=1e-9)
    # A zero positive direction (identical predictions) divides by the 1e-6 floor, not by zero.
    flat = perp_neg_guidance(eps_u, eps_u.clone(), eps_negs, weights, 7.5)
    assert torch.isfinite(flat).all()


def test_all_negative_weights_zero_is_plain_cfg():
    g = torch.Generator().manual_seed(1)
    eps_u, eps_pos = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 16, 16, generator=g)
    eps_negs = torch.randn(2, 2, 3, 16, 16, generator=g) * 100
    got = perp_neg_guidance(eps_u, eps_pos, eps_negs, torch.zeros(2, 2), 100.0)
    assert torch.allclose(got, eps_u + 100.0 * (eps_pos - eps_u), atol=1e-6, rtol=0)


@pytest.mark.parametrize("azimuth, blend", [
    (0.0, {"front": 1.0}), (45.0, {"front": 0.5, "side": 0.5}), (-45.0, {"front": 0.5, "side": 0.5}),
    (90.0, {"side": 1.0}), (135.0, {"side": 0.5, "back": 0.5}), (180.0, {"back": 1.0}), (-180.0, {"back": 1.0}),
    (300.0, {"front": 1 / 3, "side": 2 / 3}),  # wraps to -60
])
def test_positive_blend_by_azimuth(azimuth, blend):
    terms = view_terms(azimuth, 10.0, 2.0)
    assert terms.positive.keys() == blend.keys()
    assert all(terms.positive[v] == pytest.approx(c) for v, c in blend.items())


def test_negative_weights_decay_with_the_blend_and_overhead_has_none():
    w = 2.0
    # Front: the side is pushed away at full strength, the front itself not at all.
    assert dict(view_terms(0.0, 0.0, w).negatives) == pytest.approx({"front": 0.0, "side": -w})
    # Halfway to the side: r = 0.5, front -w e^(-2 r), side -w e^(-10 (1 - r)).
    assert dict(view_terms(45.0, 0.0, w).negatives) == pytest.approx(
        {"front": -w * math.exp(-1.0), "side": -w * math.exp(-5.0)})
    # Side: the front at full strength; the back half pushes from the front always.
    assert dict(view_terms(90.0, 0.0, w).negatives) == pytest.approx({"side": 0.0, "front": -w})
    assert dict(view_terms(180.0, 0.0, w).negatives) == pytest.approx({"side": -w / 2, "front": -w})
    overhead = view_terms(30.0, 75.0, w)
    assert overhead.positive == {"overhead": 1.0} and overhead.negatives == ()


class RecordingPrior(Guidance):
    """A pixel prior whose text embedding is a one-hot per prompt and whose noise reads the text (so each
    row's conditioning is visible in the output); it records what it was called with."""

    space = "pixel"

    def __init__(self, prediction_type: str = "epsilon"):
        super().__init__(DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type),
                         torch.device("cpu"), torch.float32)
        self.vocab: dict[str, int] = {}
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def prepare(self, images):
        return images * 2.0 - 1.0

    def _encode_text(self, prompts):
        rows = [self.vocab.setdefault(p, len(self.vocab)) for p in prompts]
        return torch.nn.functional.one_hot(torch.tensor(rows), 8).float()[:, None, :]

    def predict_noise(self, x_t, t, text, cameras):
        self.calls.append((x_t.clone(), text.clone()))
        return x_t * 0.1 + text[:, 0, :3, None, None]


VIEWS = {v: f"a cube, {v} view" for v in ("front", "side", "back", "overhead")}


def test_sds_scores_the_blended_positive_and_only_the_weighted_negatives():
    prior = RecordingPrior()
    cameras = make_cameras(torch.tensor([0.0, 45.0, 90.0, 180.0]), torch.tensor([10.0] * 4), 2.0, 50.0)
    images = torch.rand(4, 3, 8, 8)
    prior.sds(images, ["unused"] * 4, [""] * 4, 10.0, (0.5, 0.5), torch.Generator().manual_seed(0), cameras,
              PerpNeg(2.0, VIEWS))
    (_, text), = prior.calls
    emb = {v: prior.embed_text([p])[0] for v, p in VIEWS.items()}
    positive = text[4:8]
    assert torch.equal(positive[0], emb["front"])
    assert torch.allclose(positive[1], 0.5 * emb["front"] + 0.5 * emb["side"])
    assert torch.equal(positive[2], emb["side"]) and torch.equal(positive[3], emb["back"])
    # Weighted negatives only: front -> side; 45 -> front, side; 90 -> front; 180 -> side, front.
    negatives = [next(v for v, e in emb.items() if torch.equal(row, e)) for row in text[8:]]
    assert negatives == ["side", "front", "side", "front", "side", "front"]


def test_perp_neg_off_is_plain_cfg_and_needs_cameras_when_on():
    prior = RecordingPrior()
    images = torch.rand(1, 3, 8, 8)
    prior.sds(images, ["p"], [""], 10.0, (0.5, 0.5), torch.Generator().manual_seed(0), None, PerpNeg(0.0, VIEWS))
    assert prior.calls[-1][1].shape[0] == 2  # uncond + cond, nothing else
    with pytest.raises(ValueError, match="must pass the cameras"):
        prior.sds(images, ["p"], [""], 10.0, (0.5, 0.5), torch.Generator().manual_seed(0), None, PerpNeg(2.0, VIEWS))


def test_a_v_prediction_prior_is_converted_to_epsilon():
    """A prior predicting the exact v for a known clean image makes SDS's gradient vanish; read as epsilon
    (the old behaviour) the same output would not."""
    target = torch.rand(1, 3, 8, 8)

    class ExactV(RecordingPrior):
        def predict_noise(self, x_t, t, text, cameras):
            ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
            x0 = target * 2.0 - 1.0
            eps = (x_t - ab.sqrt() * x0) / (1.0 - ab).sqrt()
            return ab.sqrt() * eps - (1.0 - ab).sqrt() * x0

    v_prior, eps_prior = ExactV("v_prediction"), ExactV("epsilon")
    assert v_prior.prediction_type == "v_prediction"
    v = v_prior.sds(target, ["p"], [""], 7.5, (0.3, 0.7), torch.Generator().manual_seed(0))
    e = eps_prior.sds(target, ["p"], [""], 7.5, (0.3, 0.7), torch.Generator().manual_seed(0))
    assert v.value < 1e-8 < e.value


def test_jobspec_perp_neg_is_checked_at_the_edge():
    assert JobSpec(prompt="x", seed=0).perp_neg == 0.0
    with pytest.raises(SpecError, match="perp_neg = 11 is out of range; allowed: a number from 0 to 10"):
        JobSpec(prompt="x", seed=0, perp_neg=11)
    with pytest.raises(SpecError, match=r"perp_neg = 2(\.0)? is set; allowed: 0 when view_dependent is off"):
        JobSpec(prompt="x", seed=0, perp_neg=2.0, view_dependent=False)
