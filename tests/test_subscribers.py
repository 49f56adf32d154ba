"""Latest-wins flow control as bookkeeping: credit, held updates, endings, forgetting silent peers."""

from __future__ import annotations

from blender_dreamfusion.backend.server.subscribers import Subscribers
from blender_dreamfusion.shared import Finished, Progress
from tests.helpers.messages import make_update


def _update(step: int):
    return make_update(4, job_id="j", step=step)


def test_one_credit_then_only_the_newest_update_is_held():
    subs = Subscribers()
    subs.heard(b"a", 0.0)
    subs.subscribe(b"a", "j")
    assert [m.step for _, m in subs.route(_update(1))] == [1]  # the initial credit
    for step in (2, 3, 4):
        assert subs.route(_update(step)) == [] and subs.held(b"a") == 1
    assert subs.ack(b"a", "j").step == 4  # the ack releases the newest, not 2 or 3
    assert subs.held() == 0 and subs.route(_update(5)) == []  # ... and that used the credit again
    assert subs.ack(b"a", "j").step == 5 and subs.ack(b"a", "j") is None
    assert [m.step for _, m in subs.route(_update(6))] == [6]


def test_small_events_always_go_and_an_ending_drops_the_held_update():
    subs = Subscribers()
    for peer in (b"a", b"b"):
        subs.heard(peer, 0.0)
        subs.subscribe(peer, "j")
    subs.route(_update(1))
    subs.route(_update(2))
    assert subs.held() == 2
    progress = Progress(job_id="j", step=2, steps=9)
    assert [p for p, _ in subs.route(progress)] == [b"a", b"b"]
    finished = Finished(job_id="j", step=9, mesh=_update(9).mesh)
    assert len(subs.route(finished)) == 2 and subs.held() == 0
    assert subs.route(Progress(job_id="other", step=1, steps=2)) == []  # nobody follows that job


def test_silent_peers_are_forgotten_and_quiet_ones_get_heartbeats():
    subs = Subscribers()
    subs.heard(b"talkative", 10.0)
    subs.heard(b"silent", 0.0)
    subs.subscribe(b"silent", "j")
    assert subs.check_liveness(now=10.5, interval=1.0) == [b"talkative"]  # never written to: heartbeat due
    assert subs.peer_count() == 1 and subs.route(_update(1)) == []  # silent's subscription is gone
    subs.sent(b"talkative", 10.5)
    assert subs.check_liveness(now=11.0, interval=1.0) == []


def test_finished_messages_share_one_credit_per_client_and_wait_as_references():
    from blender_dreamfusion.backend.server.subscribers import MAX_WAITING_RESULTS

    subs = Subscribers()
    subs.heard(b"a", 0.0)
    assert subs.want_mesh(b"a", "j1", "r1") == (True, None)  # the credit: send it
    assert subs.want_mesh(b"a", "j2", None) == (False, None)  # a pushed end of job waits its turn
    assert subs.want_mesh(b"a", "j3", "r2") == (False, None)
    assert subs.want_mesh(b"a", "j3", "r3") == (False, "r2")  # coalesced: r2 is told it was superseded
    assert subs.want_mesh(b"a", "j2", "r4") == (False, None)  # a request joins the waiting push ...
    assert subs.waiting_meshes(b"a") == 2
    assert subs.mesh_taken(b"a", "j9") is None  # an ack for another job frees nothing
    assert subs.mesh_taken(b"a", "j1") == ("j2", "r4")  # ... and that one reply does for both, oldest first
    assert subs.mesh_taken(b"a", "j2") == ("j3", "r3")
    assert subs.mesh_taken(b"a", "j3") is None and subs.want_mesh(b"a", "j4", "r5") == (True, None)
    for i in range(MAX_WAITING_RESULTS):
        assert subs.want_mesh(b"a", f"w{i}", f"q{i}") == (False, None)
    assert subs.want_mesh(b"a", "one-too-many", "q") == (None, None)  # refused, not held
    assert subs.want_mesh(b"a", "pushed", None) == (False, None)  # the end of a job is never refused
    subs.forget(b"a")
    assert subs.waiting_meshes() == 0  # a client that leaves leaves nothing waiting
    assert subs.want_mesh(b"stranger", "j", "r") == (True, None)  # never heard of: nothing to track
