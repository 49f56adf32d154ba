"""Latest-wins flow control as bookkeeping: credit, held updates, endings, forgetting silent peers."""

from __future__ import annotations

from backend.server.subscribers import Subscribers
from shared import Finished, Progress
from tests.helpers import make_update


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
