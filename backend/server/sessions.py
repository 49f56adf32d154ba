"""Who is at the other end of a routing id: one session per connection, and the principal its jobs belong to.

ZeroMQ lets a client choose its own routing id, so an id proves nothing: a
second DEALER that sets a victim's id would be handed the victim's events.
So the server (1) keeps ROUTER_HANDOVER off, which makes the ROUTER refuse a
duplicate id while its holder is connected; (2) records the connection (its
file descriptor) each id speaks on, and starts a fresh session, with no
subscriptions, when the id turns up on another connection; and (3) ends a
session the moment its connection closes (the socket monitor's disconnect
event), so a session's events never reach whoever claims the id next.

The principal is who owns jobs: the client's CURVE public key (the User-Id
ZAP attaches to every frame, which no routing id can fake), or, without
CURVE, the session itself.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from typing import Any

import zmq


@dataclass(frozen=True)
class Session:
    principal: str
    fd: int


class Sessions:
    def __init__(self, curve: bool):
        self.curve = curve
        self._by_peer: dict[bytes, Session] = {}
        self._by_fd: dict[int, set[bytes]] = {}
        self._numbers = itertools.count(1)
        # Session principals are stored with jobs: a restarted server must not hand an old one out again.
        self._run = uuid.uuid4().hex[:8]

    def identify(self, peer: bytes, frame: Any) -> tuple[Session, bool]:
        """The session a message from `peer` belongs to (`frame`: any frame of it), and whether that session is
        new: a new one must not inherit the subscriptions of an earlier holder of the same routing id."""
        fd = _source_fd(frame)
        session = self._by_peer.get(peer)
        if session is not None and session.fd == fd:
            return session, False
        if session is not None:
            self._by_fd.get(session.fd, set()).discard(peer)
        if self.curve:
            principal = "key:" + (_user_id(frame) or "unknown")
        else:
            principal = f"session:{self._run}:{next(self._numbers)}"
        session = Session(principal, fd)
        self._by_peer[peer] = session
        self._by_fd.setdefault(fd, set()).add(peer)
        return session, True

    def get(self, peer: bytes) -> Session | None:
        return self._by_peer.get(peer)

    def disconnected(self, fd: int) -> list[bytes]:
        """The connection on `fd` closed: end its sessions; returns their routing ids (to forget them)."""
        peers = sorted(self._by_fd.pop(fd, set()))
        for peer in peers:
            self._by_peer.pop(peer, None)
        return peers

    def __len__(self) -> int:
        return len(self._by_peer)


def _source_fd(frame: Any) -> int:
    try:
        return int(frame.get(zmq.SRCFD))
    except (AttributeError, zmq.ZMQError, TypeError, ValueError):  # a plain bytes frame (tests), or no fd
        return -1


def _user_id(frame: Any) -> str | None:
    try:
        return frame.get("User-Id")
    except (AttributeError, zmq.ZMQError, KeyError):
        return None
