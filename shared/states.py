"""A job's states: the one place their names are written. Everything else (the wire's choices, the server's
transitions, the add-on's panel) uses these names and sets.

queued → running → finished | failed | cancelled; a running job whose server stopped is `interrupted`, and a
resume queues an interrupted, cancelled or failed job again. `damaged`: the server found the job's folder but
cannot read its record (the reason names the folder).
"""

from __future__ import annotations

from typing import Literal, get_args

JobState = Literal["queued", "running", "finished", "failed", "cancelled", "interrupted", "damaged"]
JOB_STATES: tuple[JobState, ...] = get_args(JobState)
QUEUED, RUNNING, FINISHED, FAILED, CANCELLED, INTERRUPTED, DAMAGED = JOB_STATES

#: Waiting for or holding a worker: what a cancel stops and a client's quota counts.
ACTIVE: tuple[JobState, ...] = (QUEUED, RUNNING)
#: Ended for good: nothing more happens unless a client resumes it.
TERMINAL: tuple[JobState, ...] = (FINISHED, FAILED, CANCELLED)
#: What a run may end in: the terminal states, or stopped with its server.
RUN_ENDS: tuple[JobState, ...] = (*TERMINAL, INTERRUPTED)
#: What `resume` queues again.
RESUMABLE: tuple[JobState, ...] = (INTERRUPTED, CANCELLED, FAILED)
