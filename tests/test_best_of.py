"""Best of N (candidates.py): the prior's judge, candidates over the wire, the artist's pick, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from blender_dreamfusion.backend.candidates import candidate_seeds, judge_field, start_candidates, train_candidates
from blender_dreamfusion.backend.guidance import load_guidance
from blender_dreamfusion.backend.server.subscribers import Subscribers
from blender_dreamfusion.backend.toy.primitives import PrimitiveField
from blender_dreamfusion.backend.toy.vocab import COLOUR_RGB
from blender_dreamfusion.backend.trainer import Trainer
from blender_dreamfusion.shared import (Chosen, Finished, JobSpec, Pick, Rejected, SpecError, Submit, Update,
                                        decode, encode)
from blender_dreamfusion.shared.client import BackendClient
from blender_dreamfusion.shared.errors import ProtocolError
from blender_dreamfusion.shared.recommended import builtin_recommendations
from tests.helpers.messages import make_mesh, make_update
from tests.helpers.servers import ThreadServer, ended, events_until, tiny_spec, two_clients_keys


# --- the judge -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy_shapes():
    return load_guidance("toy-shapes", torch.device("cpu"))


@pytest.mark.parametrize("seed", [3, 17])
@pytest.mark.parametrize("prompt, shape, colour, wrong", [
    ("a red cube", "cube", "red", [("sphere", "red"), ("cube", "blue"), ("cone", "white")]),
    ("a purple torus", "torus", "purple", [("torus", "blue"), ("cylinder", "purple"), ("sphere", "red")]),
])
def test_the_judge_ranks_the_named_object_above_wrong_ones(toy_shapes, prompt, shape, colour, wrong, seed):
    """The toy's own objects (the geometry a perfect run would fit) judged under the prompt with the toy's real
    weights: the right one scores above an object of the wrong shape and one of the wrong colour."""
    spec = JobSpec.from_dict({"prompt": prompt, "model": "toy-shapes", **builtin_recommendations("toy-shapes")})
    right = judge_field(PrimitiveField(shape, COLOUR_RGB[colour]), toy_shapes, spec, seed)
    assert right.sane
    for other_shape, other_colour in wrong:
        other = judge_field(PrimitiveField(other_shape, COLOUR_RGB[other_colour]), toy_shapes, spec, seed)
        assert right.score > other.score, (prompt, other_shape, other_colour, right, other)


def test_an_empty_candidate_ranks_last(toy_shapes):
    spec = JobSpec.from_dict({"prompt": "a red cube", "model": "toy-shapes", **builtin_recommendations("toy-shapes")})

    class Nothing(PrimitiveField):
        def forward(self, points):
            density, colour = super().forward(points)
            return density * 0.0, colour

    empty = judge_field(Nothing("cube", COLOUR_RGB["red"]), toy_shapes, spec, 5)
    wrong = judge_field(PrimitiveField("sphere", COLOUR_RGB["blue"]), toy_shapes, spec, 5)
    assert not empty.sane and wrong.sane and empty.rank_key() < wrong.rank_key()


def test_candidate_seeds_start_with_the_jobs_own_and_all_differ():
    seeds = candidate_seeds(2**32 - 1, 8)
    assert seeds[0] == 2**32 - 1 and len(set(seeds)) == 8 and all(0 <= s < 2**32 for s in seeds)
    assert candidate_seeds(7, 3) == candidate_seeds(7, 5)[:3]  # a seed's candidates do not depend on N


def test_on_one_batch_every_candidate_learns_its_own_shape_and_one_is_chosen(toy_shapes):
    """The CUDA path (one prior evaluation per round for all candidates), run here on the CPU: each candidate's
    geometry moves, apart from the others, and the judge chooses among them."""
    spec = JobSpec.from_dict({"prompt": "a red cube", "model": "toy-shapes", **builtin_recommendations("toy-shapes"),
                              "steps": 12, "candidates": 3, "select_at": 0.5, "stream_every": 0, "seed": 8})
    candidates = start_candidates(Trainer(spec, toy_shapes))
    before = [torch.cat([p.detach().flatten().clone() for p in c.trainer.field.parameters()]) for c in candidates]
    choice, stopped = train_candidates(candidates, batched=True)
    assert not stopped
    after = [torch.cat([p.detach().flatten() for p in c.trainer.field.parameters()]) for c in candidates]
    assert [c.trainer.step for c in candidates] == [6, 6, 6]
    assert all(not torch.equal(b, a) for b, a in zip(before, after))
    assert not torch.equal(after[0] - before[0], after[1] - before[1])  # each its own render, its own gradient
    assert choice.by == "judge" and len(choice.scores) == 3 and choice.seeds == tuple(candidate_seeds(8, 3))


# --- bad input at every edge ----------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, allowed", [
    ("candidates", 0, "an integer from 1 to 8"), ("candidates", 9, "an integer from 1 to 8"),
    ("candidates", 2.5, "an integer from 1 to 8"), ("select_at", 0.0, "a number from 0.01 to 0.99"),
    ("select_at", 1.0, "a number from 0.01 to 0.99"), ("select_at", -1, "a number from 0.01 to 0.99"),
])
def test_bad_candidates_and_select_at_are_refused_naming_the_field(field, value, allowed):
    with pytest.raises(SpecError, match=f"{field} = .*allowed: {allowed}"):
        JobSpec(prompt="a red cube", **{field: value})
    frames = [bytes(f) for f in encode(Submit(spec=JobSpec(prompt="a red cube")))]
    header = json.loads(frames[1])
    header["spec"][field] = value
    with pytest.raises(ProtocolError, match=f"{field} = "):  # what a server answers a submit with
        decode([frames[0], json.dumps(header).encode(), *frames[2:]])


def test_pick_and_chosen_refuse_bad_values():
    with pytest.raises(ProtocolError, match="candidate = 8 is out of range; allowed: an integer from 0 to 7"):
        Pick(job_id="j", candidate=8)
    with pytest.raises(ProtocolError, match="scores .* does not match seeds"):
        Chosen(job_id="j", step=1, candidate=0, by="judge", seeds=[1, 2], scores=[0.5])
    with pytest.raises(ProtocolError, match="seed .* does not match candidate"):
        make_update(4, candidate=1)


def test_the_cli_refuses_bad_candidates_with_one_line():
    out = subprocess.run([sys.executable, "-m", "blender_dreamfusion.backend.cli", "generate", "a red cube",
                          "--candidates", "9"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "candidates = 9 is out of range; allowed: an integer from 1 to 8" in out.stderr
    out = subprocess.run([sys.executable, "-m", "blender_dreamfusion.backend.cli", "client", "pick", "job1", "8"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "candidate = 8 is out of range; allowed: an integer from 0 to 7" in out.stderr


# --- flow control keeps one update per mesh ------------------------------------------------------------------

def test_every_candidates_newest_update_is_held_and_a_choice_drops_them():
    subs = Subscribers()
    subs.heard(b"a", 0.0)
    subs.subscribe(b"a", "j")
    def update(step: int, candidate: int | None) -> Update:
        return Update(job_id="j", step=step, steps=40, mesh=make_mesh(4), candidate=candidate,
                      seed=None if candidate is None else 100 + candidate)

    assert len(subs.route(update(2, 0))) == 1  # the credit
    for step in (2, 4):
        for c in (1, 2, 0):
            assert subs.route(update(step, c)) == []
    assert subs.held(b"a") == 3  # one per candidate, the newest of each
    released = subs.ack(b"a", "j")
    assert (released.candidate, released.step) == (1, 4)  # the oldest held mesh goes first
    assert subs.route(Chosen(job_id="j", step=6, candidate=2, by="judge", seeds=[0, 1, 2], scores=[0, 0, 1.0]))
    assert subs.held(b"a") == 0  # the candidates' meshes are moot now
    assert subs.route(update(8, None)) == [] and subs.ack(b"a", "j").candidate is None


# --- over the wire with the tiny SD ----------------------------------------------------------------------------

def _meshes_equal(a, b) -> bool:
    return np.array_equal(a.positions, b.positions) and np.array_equal(a.triangles, b.triangles)


def test_candidates_stream_one_is_chosen_and_goes_on_alone_and_resumes(tmp_path, tiny_sd):
    """Three candidates stream each their own mesh, one is chosen at select_at, and from there the job's updates
    and its final mesh are the chosen one's: the very mesh a single job of the chosen seed makes. A job cancelled
    after its choice resumes with the chosen candidate alone and ends with the same mesh."""
    spec = tiny_spec(tiny_sd, candidates=3, select_at=0.25, steps=40, stream_every=5, seed=11)
    # One fixed thread: a count that follows the machine's load changes how sums are ordered, and so the last bits.
    running = ThreadServer(tmp_path / "data", threads=1)
    try:
        with BackendClient(running.endpoint) as client:
            job = client.request(client.submit(spec)).job_id
            events = events_until(client, ended(job), timeout=300)
            assert isinstance(events[-1], Finished), events[-1]
            chosen = [e for e in events if isinstance(e, Chosen)]
            assert len(chosen) == 1 and chosen[0].by == "judge" and chosen[0].step == 10
            choice = chosen[0]
            assert choice.seeds == candidate_seeds(11, 3) and len(choice.scores) == 3
            assert choice.candidate == max(range(3), key=lambda i: choice.scores[i])
            before = events[:events.index(choice)]
            after = events[events.index(choice):]
            streamed = [(e.candidate, e.seed, e.step) for e in before if isinstance(e, Update)]
            assert {(c, s) for c, s, _ in streamed} == set(zip(range(3), choice.seeds))
            assert {step for *_, step in streamed} == {5}  # each candidate streams at the spec's steps
            assert all(e.candidate is None for e in after if isinstance(e, Update))
            best = events[-1].mesh

            # The chosen candidate trained as a single job of its seed would have.
            single = client.request(client.submit(spec.replace(candidates=1, seed=choice.seeds[choice.candidate])))
            alone = events_until(client, ended(single.job_id), timeout=300)
            assert not any(isinstance(e, Chosen) for e in alone)
            assert _meshes_equal(alone[-1].mesh, best)

            # Cancelled after the choice, then resumed: the chosen candidate goes on alone, to the same end.
            again = client.request(client.submit(spec)).job_id
            seen = events_until(client, lambda e: isinstance(e, Chosen) and e.job_id == again, timeout=300)
            client.cancel(again)
            seen += events_until(client, ended(again), timeout=120)
            assert [e.TYPE for e in seen if getattr(e, "job_id", None) == again][-1] == "cancelled"
            client.resume(again)
            resumed = events_until(client, ended(again), timeout=300)
            assert isinstance(resumed[-1], Finished)
            assert not any(isinstance(e, Chosen) or getattr(e, "candidate", None) is not None for e in resumed)
            assert _meshes_equal(resumed[-1].mesh, best)
    finally:
        running.stop()


def test_the_artists_pick_over_the_wire_and_picks_that_are_refused(tmp_path, tiny_sd):
    keys = tmp_path / "keys"
    alice, bob = two_clients_keys(keys)
    running = ThreadServer(tmp_path / "data", curve_dir=keys)
    try:
        with BackendClient(running.endpoint, curve=alice) as client, \
                BackendClient(running.endpoint, curve=bob) as other:
            job = client.request(client.submit(tiny_spec(tiny_sd, candidates=3, select_at=0.9, steps=200,
                                                         stream_every=5))).job_id
            refused = other.request(other.pick(job, 1))  # another key's job: not even told it exists
            assert isinstance(refused, Rejected) and "no job" in refused.reason
            wrong = client.request(client.pick(job, 3))
            assert isinstance(wrong, Rejected) and wrong.field == "candidate" and "from 0 to 2" in wrong.reason
            client.pick(job, 2)
            events = events_until(client, lambda e: isinstance(e, Chosen) and e.job_id == job, timeout=300)
            assert (events[-1].candidate, events[-1].by) == (2, "artist")
            assert events[-1].step < 180  # taken at once, not at select_at
            late = client.request(client.pick(job, 0))
            assert isinstance(late, Rejected) and "chosen its candidate already" in late.reason
            client.cancel(job)
            events_until(client, ended(job), timeout=120)
            # Cancelled before its choice, a job chooses then (the judge), so its checkpoint is the chosen
            # candidate's; resumed, that candidate goes on alone.
            early = client.request(client.submit(tiny_spec(tiny_sd, candidates=2, select_at=0.9, steps=60,
                                                           stream_every=5))).job_id
            events_until(client, lambda e: isinstance(e, Update) and e.job_id == early, timeout=300)
            client.cancel(early)
            stopped = [e for e in events_until(client, ended(early), timeout=120) if getattr(e, "job_id", "") == early]
            choices = [e for e in stopped if isinstance(e, Chosen)]
            assert stopped[-1].TYPE == "cancelled" and len(choices) == 1 and choices[0].by == "judge"
            assert choices[0].step < 54
            client.resume(early)
            resumed = events_until(client, ended(early), timeout=300)
            assert isinstance(resumed[-1], Finished) and resumed[-1].step == 60
            assert not any(isinstance(e, Chosen) or getattr(e, "candidate", None) is not None for e in resumed)
            single = client.request(client.submit(tiny_spec(tiny_sd, steps=4))).job_id
            none = client.request(client.pick(single, 0))
            assert isinstance(none, Rejected) and "trains no candidates" in none.reason
            events_until(client, ended(single), timeout=120)
    finally:
        running.stop()


def test_generate_prints_the_candidates_and_the_chosen_seed(tiny_sd, tmp_path):
    out = subprocess.run([sys.executable, "-m", "blender_dreamfusion.backend.cli", "generate", "a red cube",
                          "--model", str(tiny_sd), "--candidates", "2", "--select-at", "0.5", "--steps", "6",
                          "--render-resolution", "32", "--mesh-resolution", "32", "--seed", "4", "--quiet",
                          "--out", str(tmp_path / "cube.glb")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("best of 2"))
    seeds = candidate_seeds(4, 2)
    assert f"seed {seeds[0]} score" in line and f"seed {seeds[1]} score" in line and "chosen by the judge" in line
    assert (tmp_path / "cube.glb").is_file()
