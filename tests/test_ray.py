"""`serve --ray` on a real Ray cluster on this machine: a head and two worker nodes (real raylet processes,
`ray.cluster_utils.Cluster`), each worker offering one logical GPU, and the gateway in front of them.

One cluster and one gateway serve the whole module (starting Ray costs seconds); each node's object store
is bounded. The tests take jobs through the gateway's ZeroMQ door exactly as Blender does.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from blender_dreamfusion.backend.server.ray_runner import RayOptions  # noqa: E402
from blender_dreamfusion.shared import Cancelled, Chosen, Finished, JobInfo, Progress, StatusReply, Update  # noqa: E402
from blender_dreamfusion.shared.client import BackendClient  # noqa: E402
from tests.helpers.servers import SCRIPT, ThreadServer, ended, events_until, tiny_spec, wait_for  # noqa: E402

pytestmark = pytest.mark.slow

MB = 2**20
#: Seconds a wait may take that covers a fresh actor loading its prior and its first steps: seconds here, but
#: minutes on a loaded 2-core CI machine (four Ray processes, two actors, the gateway). Waits poll, so a long
#: deadline costs nothing when things are quick; what a test asserts about time (a cancel's answer) stays tight.
SLOW = 240.0
#: Each node's object store: the smallest Ray accepts is 75 MB; a tiny job's checkpoint is 3 MB.
NODE = dict(num_cpus=1, num_gpus=1, object_store_memory=80 * MB)


@pytest.fixture(scope="module")
def cluster():
    head = dict(num_cpus=0, num_gpus=0, object_store_memory=80 * MB, include_dashboard=False)
    running = Cluster(initialize_head=True, head_node_args=head)
    workers = [running.add_node(**NODE) for _ in range(2)]
    running.wait_for_nodes()
    # The test process is the gateway's Ray driver; gateways here find Ray initialised and share it.
    ray.init(address=running.address, namespace="dreamfusion", logging_level="WARNING")
    yield running, workers
    ray.shutdown()
    running.shutdown()


@pytest.fixture(scope="module")
def gateway(cluster, tmp_path_factory):
    server = ThreadServer(tmp_path_factory.mktemp("gateway") / "data", ray=RayOptions(address="auto"),
                          device="auto")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _nodes_freed(request):
    """A test that fails while its jobs run leaves them running; cancel them, so the next test finds both nodes
    free instead of failing behind them."""
    yield
    if "gateway" not in request.fixturenames:
        return
    with BackendClient(request.getfixturevalue("gateway").endpoint) as client:
        for job in client.list_all():
            if job.state in ("queued", "running"):
                client.cancel(job.job_id)


def _node_of(info: JobInfo, workers) -> object:
    """The cluster node a job ran on, from the `node` its status names ("host (node id prefix)")."""
    matches = [w for w in workers if info.node and w.node_id[:8] in info.node]
    assert len(matches) == 1, (info.node, [w.node_id[:8] for w in workers])
    return matches[0]


def _status(client: BackendClient, job_id: str) -> JobInfo:
    reply = client.request(client.status(job_id), timeout=30)
    assert isinstance(reply, StatusReply), reply
    return reply.jobs[0]


def _running_on(client: BackendClient, job_id: str, workers, timeout: float = SLOW):
    info = wait_for(lambda: (i := _status(client, job_id)).state == "running" and i.node and i, timeout,
                 f"job {job_id} to run")
    return _node_of(info, workers)


def test_four_prompts_finish_on_both_nodes_one_job_per_node_at_a_time(cluster, gateway, tiny_sd):
    _, workers = cluster
    placed, handed = gateway.server._runner.placements, gateway.server._runner.handoffs
    with BackendClient(gateway.endpoint) as client:
        welcome = client.ping(30)
        assert welcome.job_slots > 1  # a batch may hand the gateway every prompt at once
        job_ids = [client.request(client.submit(tiny_spec(tiny_sd, steps=12, stream_every=4, seed=i))).job_id
                   for i in range(4)]
        started, finished, updates = {}, {}, {}
        deadline = time.monotonic() + 2 * SLOW
        while len(finished) < 4 and time.monotonic() < deadline:
            for event in client.poll(0.2):
                job_id = getattr(event, "job_id", None)
                if isinstance(event, Progress) and event.phase == "loading_model":
                    started.setdefault(job_id, time.monotonic())
                elif isinstance(event, Update):
                    updates[job_id] = updates.get(job_id, 0) + 1
                elif isinstance(event, Finished):
                    finished[job_id] = time.monotonic()
                    assert event.mesh.vertex_count > 0 and event.files["glb"].endswith("result.glb")
                    assert Path(event.files["glb"]).is_file()  # the gateway's copy, where the message says
        assert sorted(finished) == sorted(job_ids)
        infos = {job_id: _status(client, job_id) for job_id in job_ids}
    assert all(info.state == "finished" and info.step == 12 for info in infos.values())
    # The first two jobs' actors, warm, ran the other two: Ray placed two actors for four jobs.
    runner = gateway.server._runner
    assert (runner.placements - placed, runner.handoffs - handed) == (2, 2)
    # First come, first served, whatever order Ray placed the actors in: the first two jobs got the nodes.
    order = list(runner.start_order)[-4:]
    assert set(order[:2]) == set(job_ids[:2]) and order[2:] == job_ids[2:], (order, job_ids)
    assert all(updates.get(job_id, 0) >= 2 for job_id in job_ids), updates  # meshes streamed from the nodes
    nodes = {job_id: _node_of(info, workers) for job_id, info in infos.items()}
    assert {id(node) for node in nodes.values()} == {id(w) for w in workers}  # both nodes ran jobs
    for worker in workers:  # never two at once on one node: its jobs' [start, end] spans do not overlap
        spans = sorted((started[j], finished[j]) for j in job_ids if nodes[j] is worker)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans


def test_cancel_on_a_node_answers_within_seconds_and_the_node_takes_the_next_job(cluster, gateway, tiny_sd):
    _, workers = cluster
    with BackendClient(gateway.endpoint) as client:
        long = dict(steps=400, stream_every=4)
        # All three at once: Ray places pending actors in no set order, but jobs start in the order they came.
        first, second = (client.request(client.submit(tiny_spec(tiny_sd, seed=10 + i, **long))).job_id
                         for i in range(2))
        # The waiting one trains two candidates; the artist's pick, made while it waits, travels with its run.
        waiting = client.request(client.submit(tiny_spec(tiny_sd, steps=8, stream_every=4, seed=12, candidates=2,
                                                         select_at=0.9))).job_id
        client.pick(waiting, 1)
        node = _running_on(client, first, workers)
        _running_on(client, second, workers)
        assert _status(client, waiting).state == "queued"
        events_until(client, lambda e: isinstance(e, Update) and e.job_id == first, timeout=SLOW)
        asked = time.monotonic()
        client.cancel(first)
        events = events_until(client, ended(first), timeout=30)
        took = time.monotonic() - asked
        assert isinstance(events[-1], Cancelled) and took < 5.0, took
        assert _status(client, first).state == "cancelled"
        # The freed node takes the job that was waiting; the other is still busy with `second`.
        taken = wait_for(lambda: (i := _status(client, waiting)).node and i, SLOW, "the waiting job to start")
        assert _node_of(taken, workers) is node
        choices = [e for e in events_until(client, ended(waiting), timeout=SLOW) if isinstance(e, Chosen)]
        assert [(c.job_id, c.candidate, c.by) for c in choices] == [(waiting, 1, "artist")]
        client.cancel(second)
        events_until(client, ended(second), timeout=30)


def test_a_node_is_trusted_with_its_own_job_only(cluster, gateway, tiny_sd):
    """Whatever a node reports (another job's end, paths outside the job folder, states a worker never sets,
    arbitrary values) is refused with ValueError, and the gateway's records and files stay as they were."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from blender_dreamfusion.backend.server import job_host
    from blender_dreamfusion.backend.server.node_reports import RESULT_FILES
    from blender_dreamfusion.shared import Cancelled as CancelledMessage
    from blender_dreamfusion.shared.framing import encode

    runner, store = gateway.server._runner, gateway.server.store
    with BackendClient(gateway.endpoint) as client:
        mine, other = (client.request(client.submit(tiny_spec(tiny_sd, steps=4, stream_every=2, seed=s))).job_id
                       for s in (41, 42))
        done: set[str] = set()
        events_until(client, lambda e: e.TYPE == "finished" and done.add(e.job_id) is None and len(done) == 2, SLOW)
    before = {job_id: store.get(job_id) for job_id in (mine, other)}
    files = sorted(p.name for p in store.folder(mine).iterdir())
    hostile = [
        (job_host.MESSAGE, [bytes(f) for f in encode(CancelledMessage(job_id=other, step=1))]),  # another job's end
        (job_host.UPDATE, {"state": "queued"}, True),  # a state no worker sets
        (job_host.UPDATE, {"step": "many"}, True), (job_host.UPDATE, {"step": 10**9}, True),
        (job_host.UPDATE, {"loss": float("nan")}, True), (job_host.UPDATE, {"owner": "key:me"}, True),
        (job_host.UPDATE, {"files": {"glb": "/etc/passwd"}}, True),
        (job_host.FILE, "job.json", b"{}"), (job_host.FILE, "../escape.glb", b""), (job_host.FILE, "result.glb", "x"),
        (job_host.CHECKPOINT, "not bytes"), (job_host.MESH, 1, 2), ("surprise",), (), "text", None,
    ]
    for report in hostile:
        with pytest.raises(ValueError):
            runner._apply(mine, report)
    assert {job_id: store.get(job_id) for job_id in (mine, other)} == before
    assert sorted(p.name for p in store.folder(mine).iterdir()) == files

    values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=3), max_leaves=8)
    kinds = st.sampled_from([job_host.MESSAGE, job_host.UPDATE, job_host.FILE, job_host.CHECKPOINT, job_host.MESH,
                             job_host.TEXTURE]) | st.text(max_size=10)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(kinds, st.lists(values, max_size=3))
    def arbitrary(kind, rest):
        try:
            runner._apply(mine, (kind, *rest))
        except ValueError:
            pass

    arbitrary()
    # Random reports may now and then be valid ones about the node's own job (a mesh, a texture, a reason): those
    # it may make. Nothing reaches the other job, ends this one again, or puts a file of another kind in its folder.
    assert store.get(other) == before[other] and store.get(mine).state == before[mine].state
    own = {*files, "mesh.npz", "texture.npz", "checkpoint.safetensors", "checkpoint.prev.safetensors"}
    assert all(p.name in own or re.fullmatch(RESULT_FILES, p.name) for p in store.folder(mine).iterdir())


def test_the_batch_command_against_the_gateway_runs_three_prompts(cluster, gateway, tiny_sd, tmp_path):
    pytest.importorskip("bpy")  # the batch runs in the add-on, inside Blender's Python
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import build_addon
    from tests.helpers.addon import disable, install_from_zip

    module = install_from_zip(build_addon.build_zip(tmp_path / "dist"), tmp_path / "addons")
    try:
        prompts = tmp_path / "prompts.txt"
        prompts.write_text("a red cube\na blue sphere\na green cone\n", encoding="utf-8")
        out = tmp_path / "out"
        status = module.batch.main(["batch", "--prompts", str(prompts), "--out", str(out), "--model", str(tiny_sd),
                                    "--steps", "8", "--render-resolution", "32", "--mesh-resolution", "32",
                                    "--stream-every", "4", "--seed", "5", "--backend", gateway.endpoint])
    finally:
        disable()
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert status == 0 and summary["finished"] == 3, summary
    assert all(Path(r["files"]["glb"]).is_file() for r in summary["results"])
    assert all(r["backend"] == gateway.endpoint and r["attempts"] == 1 for r in summary["results"])


def test_a_lost_node_costs_at_most_a_checkpoint_interval_and_the_job_streams_on(cluster, gateway, tiny_sd):
    running, workers = cluster
    with BackendClient(gateway.endpoint) as client:
        job_id = client.request(client.submit(tiny_spec(tiny_sd, steps=60, stream_every=5, seed=21))).job_id
        node = _running_on(client, job_id, workers)
        # The gateway holds a checkpoint once the job's record shows a step (written with each checkpoint).
        checkpoint_step = wait_for(lambda: _status(client, job_id).step, SLOW, "the first checkpoint")
        lost_at = time.monotonic()
        running.remove_node(node)
        workers.remove(node)
        events = events_until(client, ended(job_id), timeout=150)
        info = _status(client, job_id)
        workers.append(running.add_node(**NODE))  # the later tests get two nodes again
    assert isinstance(events[-1], Finished) and info.state == "finished" and info.step == 60
    assert node.node_id[:8] not in info.node  # it finished elsewhere
    trained = next(i for i, e in enumerate(events) if isinstance(e, Progress) and e.phase == "training")
    requeued = next(i for i, e in enumerate(events) if i > trained and isinstance(e, Progress) and e.phase == "queued")
    after = events[requeued:]
    resumed = [e.step for e in after if isinstance(e, Progress) and e.phase == "training"]
    assert resumed and resumed[0] > 0 and resumed[0] >= checkpoint_step  # from a checkpoint, not from scratch
    lost_steps = max(e.step for e in events[:requeued] if isinstance(e, Progress)) - resumed[0]
    assert lost_steps <= 5 + 1, lost_steps  # at most one checkpoint interval (stream_every) and the step it was in
    assert [e.step for e in after if isinstance(e, Update)], "no mesh streamed after the job moved"
    assert time.monotonic() - lost_at < 150


def test_a_gateway_restart_leaves_running_jobs_interrupted_and_resumable(cluster, tiny_sd, tmp_path):
    data = tmp_path / "data"
    first = ThreadServer(data, ray=RayOptions(), device="auto")
    try:
        with BackendClient(first.endpoint) as client:
            job_id = client.request(client.submit(tiny_spec(tiny_sd, steps=400, stream_every=5, seed=31))).job_id
            wait_for(lambda: _status(client, job_id).step, SLOW, "the first checkpoint")
    finally:
        first.stop()
    second = ThreadServer(data, ray=RayOptions(), device="auto")
    try:
        with BackendClient(second.endpoint) as client:
            info = _status(client, job_id)
            assert info.state == "interrupted" and info.step > 0, info
            client.cancel(job_id)  # refused: an interrupted job has nothing running
            client.resume(job_id)
            progress = events_until(client, lambda e: isinstance(e, Progress) and e.phase == "training", SLOW)[-1]
            assert progress.step > 0  # continued from the checkpoint the first gateway kept
            client.cancel(job_id)
            events_until(client, ended(job_id), timeout=30)
    finally:
        second.stop()


def test_a_job_no_node_can_take_says_so_and_a_cancel_takes_it_out_of_rays_queue(cluster, tiny_sd, tmp_path):
    server = ThreadServer(tmp_path / "data", ray=RayOptions(resources={"a100": 1.0}), device="auto")
    try:
        with BackendClient(server.endpoint) as client:
            job_id = client.request(client.submit(tiny_spec(tiny_sd, steps=4, stream_every=2, seed=51))).job_id
            info = wait_for(lambda: (i := _status(client, job_id)).reason and i, 30, "the waiting reason")
            assert info.state == "queued" and "no node of the Ray cluster offers 1 a100" in info.reason, info
            client.cancel(job_id)
            assert isinstance(events_until(client, ended(job_id), timeout=10)[-1], Cancelled)
        # Its pending actor left Ray's queue: nothing of this gateway's is left waiting for a node.
        wait_for(lambda: not server.server._runner.waiting() and not server.server._runner._jobs, 30,
              "the job's actor to go")
    finally:
        server.stop()


def test_serve_ray_without_a_cluster_says_so_in_one_line(tmp_path):
    done = subprocess.run([str(SCRIPT), "serve", "--ray", "127.0.0.1:9", "--bind", "tcp://127.0.0.1:0",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "cannot reach a Ray cluster at '127.0.0.1:9'" in done.stderr and "ray start --head" in done.stderr


def test_ray_flags_are_checked_at_the_command_line(tmp_path):
    def serve(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPT), "serve", "--data-dir", str(tmp_path), *flags], capture_output=True,
                              text=True, timeout=60)

    for flags, words in ((["--ray-gpus", "2"], "--ray-gpus only applies with --ray"),
                         (["--no-ray-reuse-actors"], "--no-ray-reuse-actors only applies with --ray"),
                         (["--ray", "--ray-gpus", "-1"], "--ray-gpus: -1.0 is out of range; allowed: 0 to 1024"),
                         (["--ray", "--ray-resource", "a100"], "--ray-resource: 'a100' must be NAME=AMOUNT"),
                         (["--ray", "--ray-max-attempts", "0"], "--ray-max-attempts: 0 is out of range")):
        done = serve(*flags)
        assert done.returncode == 2 and words in done.stderr, (flags, done.stderr[-500:])
