"""Who hears which job, and the latest-wins flow control of each (client, job) subscription.

Every subscription has one credit. An update goes out when the credit is
there and uses it up; otherwise it is held, replacing any older held
update. An `ack` gives the credit back and releases the held update. So the
server holds at most one update per subscriber, however slow or absent the
client is. Other events (progress, the end of a job) always go out: they
are small, and losing one would leave a client with a wrong picture.

Pure bookkeeping: the server's loop does the sending.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared import Cancelled, Failed, Finished, Message, Update

ENDINGS = (Finished, Failed, Cancelled)


@dataclass
class Subscription:
    credit: bool = True
    held: Update | None = None


@dataclass
class Peer:
    last_heard: float
    last_sent: float = 0.0
    jobs: set[str] = field(default_factory=set)


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
                    sub.held = message  # an older held update is dropped
                continue
            if isinstance(message, ENDINGS):
                sub.held, sub.credit = None, True  # the final message carries the newest state
            out.append((peer, message))
        return out

    def ack(self, peer: bytes, job_id: str) -> Update | None:
        """The credit comes back; returns the held update to send with it, if there is one."""
        sub = self._subs.get(job_id, {}).get(peer)
        if sub is None:
            return None
        if sub.held is not None:
            held, sub.held = sub.held, None
            return held
        sub.credit = True
        return None

    def held(self, peer: bytes | None = None) -> int:
        """Updates waiting for credit (for one peer, or in all)."""
        return sum(1 for subs in self._subs.values() for p, s in subs.items()
                   if s.held is not None and (peer is None or p == peer))
