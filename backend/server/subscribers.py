"""Who hears which job, and the latest-wins flow control of each (client, job) subscription.

Every subscription has one credit. An update goes out when the credit is
there and uses it up; otherwise it is held, replacing any older held
update of the same mesh (the job's own, or one best-of-N candidate's). An
`ack` gives the credit back and releases the oldest held update. So the
server holds at most one update per mesh of a job per subscriber (1 + 8
candidates), however slow or absent the client is. Other events (progress,
a best-of-N choice, the end of a job) always go out: they are small, and
losing one would leave a client with a wrong picture; after a choice no
candidate's held update goes out.

The other messages that carry a mesh (`finished`, pushed at a job's end or
sent again for `result`) share one more credit per client: while one is
unacknowledged, later ones wait as (job id, request id) references and are
built from disk when the credit comes back. A client that never reads holds
one mesh in the server, however many results it asks for.

Pure bookkeeping: the server's loop does the sending.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from blender_dreamfusion.shared import Cancelled, Chosen, Failed, Finished, Message, Update

ENDINGS = (Finished, Failed, Cancelled)
#: `result` requests one client may have waiting for the mesh credit (pushed `finished` events always wait).
MAX_WAITING_RESULTS = 64


@dataclass
class Subscription:
    credit: bool = True
    #: Held updates by the mesh they carry (None: the job's own; a best-of-N candidate's index), oldest first.
    held: OrderedDict[int | None, Update] = field(default_factory=OrderedDict)


@dataclass
class Peer:
    last_heard: float
    last_sent: float = 0.0
    jobs: set[str] = field(default_factory=set)
    #: The job whose `finished` (with its mesh) is out and not yet acknowledged.
    mesh_out: str | None = None
    #: job id -> request id (None: a pushed end of job) of `finished` messages waiting for that credit.
    mesh_waiting: OrderedDict[str, str | None] = field(default_factory=OrderedDict)


class Subscribers:
    def __init__(self) -> None:
        self._subs: dict[str, dict[bytes, Subscription]] = {}
        self._peers: dict[bytes, Peer] = {}

    # --- peers --------------------------------------------------------------------

    def heard(self, peer: bytes, now: float) -> None:
        if peer in self._peers:
            self._peers[peer].last_heard = now
        else:
            self._peers[peer] = Peer(last_heard=now)

    def sent(self, peer: bytes, now: float) -> None:
        if peer in self._peers:
            self._peers[peer].last_sent = now

    def forget(self, peer: bytes) -> None:
        """The client said bye or went silent: drop its subscriptions (its jobs go on)."""
        state = self._peers.pop(peer, None)
        for job_id in state.jobs if state else ():
            self._subs.get(job_id, {}).pop(peer, None)

    def check_liveness(self, now: float, interval: float) -> list[bytes]:
        """Forget peers silent for three intervals; return the live ones we have not written to for one."""
        quiet = []
        for peer, state in list(self._peers.items()):
            if now - state.last_heard > 3 * interval:
                self.forget(peer)
            elif now - state.last_sent > interval:
                quiet.append(peer)
        return quiet

    def peer_count(self) -> int:
        return len(self._peers)

    # --- jobs ---------------------------------------------------------------------

    def subscribe(self, peer: bytes, job_id: str) -> None:
        self._subs.setdefault(job_id, {}).setdefault(peer, Subscription())
        if peer in self._peers:
            self._peers[peer].jobs.add(job_id)

    def route(self, message: Message) -> list[tuple[bytes, Message]]:
        """Who gets a job's event now. Updates without credit are held instead (latest wins)."""
        out = []
        for peer, sub in self._subs.get(getattr(message, "job_id"), {}).items():
            if isinstance(message, Update):
                if sub.credit:
                    sub.credit = False
                    out.append((peer, message))
                else:
                    sub.held.pop(message.candidate, None)  # an older held update of that mesh is dropped
                    sub.held[message.candidate] = message
                continue
            if isinstance(message, ENDINGS):
                sub.held.clear()  # the final message carries the newest state
                sub.credit = True
            elif isinstance(message, Chosen):  # the candidates' meshes are moot once one is chosen
                for candidate in [c for c in sub.held if c is not None]:
                    del sub.held[candidate]
            out.append((peer, message))
        return out

    def ack(self, peer: bytes, job_id: str) -> Update | None:
        """The credit comes back; returns the held update to send with it, if there is one."""
        sub = self._subs.get(job_id, {}).get(peer)
        if sub is None:
            return None
        if sub.held:
            return sub.held.popitem(last=False)[1]
        sub.credit = True
        return None

    # --- finished messages (one mesh credit per client) -----------------------------------

    def want_mesh(self, peer: bytes, job_id: str, request_id: str | None) -> tuple[bool | None, str | None]:
        """A `finished` for `peer`: (True, None) to send it now (taking the credit); (False, superseded) when it
        waits its turn, where `superseded` is the request id of an earlier wait for the same job that this one
        replaces (coalesced: one mesh answers both; tell that request so); (None, None) when too many `result`
        requests already wait (refuse this one)."""
        state = self._peers.get(peer)
        if state is None:
            return True, None  # nothing tracked for it (it never spoke): one message, no lasting state
        if state.mesh_out is None:
            state.mesh_out = job_id
            return True, None
        waiting = state.mesh_waiting
        if job_id in waiting:
            earlier = waiting[job_id]
            if request_id is None:  # a pushed end of job joins a waiting request: that reply will do for both
                return False, None
            waiting[job_id] = request_id
            return False, earlier
        if request_id is not None and sum(r is not None for r in waiting.values()) >= MAX_WAITING_RESULTS:
            return None, None
        waiting[job_id] = request_id
        return False, None

    def mesh_taken(self, peer: bytes, job_id: str) -> tuple[str, str | None] | None:
        """`peer` took (or could not be sent) the `finished` of `job_id`: the next waiting (job id, request id),
        which now holds the credit, or None."""
        state = self._peers.get(peer)
        if state is None or state.mesh_out != job_id:
            return None
        if state.mesh_waiting:
            next_job, request_id = state.mesh_waiting.popitem(last=False)
            state.mesh_out = next_job
            return next_job, request_id
        state.mesh_out = None
        return None

    def waiting_meshes(self, peer: bytes | None = None) -> int:
        """`finished` messages waiting for a client's credit (for one peer, or all)."""
        return sum(len(s.mesh_waiting) for p, s in self._peers.items() if peer is None or p == peer)

    def held(self, peer: bytes | None = None) -> int:
        """Updates waiting for credit (for one peer, or in all)."""
        return sum(len(s.held) for subs in self._subs.values() for p, s in subs.items() if peer is None or p == peer)
