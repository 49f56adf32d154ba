"""SDS has the right sign and scale: against a prior that 'knows' a target image, optimisation moves toward it."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from blender_dreamfusion.backend.cameras import make_cameras
from blender_dreamfusion.backend.geometry import DensityField
from blender_dreamfusion.backend.guidance.base import Guidance
from blender_dreamfusion.backend.renderer import render


class TargetPrior(Guidance):
    """A pixel prior whose noise prediction is exact for one target image: eps = (x_t - sqrt(ab) x*) / sqrt(1 - ab)."""

    space = "pixel"

    def __init__(self, target: torch.Tensor):
        super().__init__(DDPMScheduler(num_train_timesteps=1000), torch.device("cpu"), torch.float32)
        self.target = target * 2.0 - 1.0

    def prepare(self, images):
        return images * 2.0 - 1.0

    def _encode_text(self, prompts):
        return torch.zeros(len(prompts), 1, 4)

    def predict_noise(self, x_t, t, text, cameras):
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (x_t - ab.sqrt() * self.target) / (1.0 - ab).sqrt()


def target_image(size: int = 16) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    disc = ((xx**2 + yy**2) < 0.4).float()
    return torch.stack([disc * 0.9 + (1 - disc), disc * 0.1 + (1 - disc), disc * 0.1 + (1 - disc)])[None]


def test_sds_gradient_is_w_times_eps_difference_and_points_away_from_the_target():
    target = target_image()
    prior = TargetPrior(target)
    image = torch.full_like(target, 0.5, requires_grad=True)
    result = prior.sds(image, ["p"], [""], 7.5, (0.5, 0.5), torch.Generator().manual_seed(0))
    result.loss.backward()
    t = int(result.timesteps[0])
    ab = prior.alphas_cumprod[t]
    # eps_hat - eps = sqrt(ab) (x - x*) / sqrt(1 - ab), so grad = w sqrt(ab)/sqrt(1-ab) (x - x*), times d x/d image = 2.
    expected = 2.0 * (1.0 - ab) * ab.sqrt() / (1.0 - ab).sqrt() * ((image * 2 - 1) - prior.target)
    assert torch.allclose(image.grad, expected.detach(), atol=1e-4)


def test_sds_moves_a_free_image_to_the_target():
    target = target_image()
    prior = TargetPrior(target)
    logits = torch.zeros_like(target, requires_grad=True)
    optimiser = torch.optim.Adam([logits], lr=0.05)
    generator = torch.Generator().manual_seed(0)
    start = float(((torch.sigmoid(logits.detach()) - target) ** 2).mean())
    for _ in range(300):
        optimiser.zero_grad()
        prior.sds(torch.sigmoid(logits), ["p"], [""], 1.0, (0.02, 0.98), generator).loss.backward()
        optimiser.step()
    end = float(((torch.sigmoid(logits.detach()) - target) ** 2).mean())
    assert end < 0.05 * start


def test_sds_shapes_the_field_renders_toward_the_target():
    size = 16
    camera = make_cameras(0.0, 0.0, 2.0, 40.0)
    torch.manual_seed(0)
    field = DensityField()
    with torch.no_grad():
        target = render(_SphereLike(), camera, size, background=torch.ones(1, 3)).rgb
    prior = TargetPrior(target)
    optimiser = torch.optim.Adam(field.parameters(), lr=0.02, eps=1e-15)
    generator = torch.Generator().manual_seed(0)

    def error() -> float:
        with torch.no_grad():
            return float(((render(field, camera, size).rgb - target) ** 2).mean())

    start = error()
    for _ in range(150):
        optimiser.zero_grad()
        rgb = render(field, camera, size, generator=generator).rgb
        prior.sds(rgb, ["p"], [""], 1.0, (0.02, 0.98), generator).loss.backward()
        optimiser.step()
    assert error() < 0.3 * start


class _SphereLike(torch.nn.Module):
    """A red ball of radius 0.35: a target the blob-initialised field can reach."""

    bound = 1.0

    def forward(self, points):
        inside = points.norm(dim=-1) < 0.35
        return inside.float() * 200.0, torch.tensor([0.9, 0.1, 0.1]).expand(points.shape[0], 3)

    def density(self, points):
        return self(points)[0]

    def normals(self, points):
        return torch.nn.functional.normalize(points, dim=-1)
