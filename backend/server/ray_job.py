"""One job on a Ray node: the actor `serve --ray` places per job.

The actor is a `JobHost` (`job_host.py`: the worker code a plain server's job process runs too, against a
scratch job folder that reports every change), and `run` is a Ray streaming generator of its reports, so they
reach the gateway in order, one at a time, while the job trains. The gateway's folder stays the job's only
durable copy; the node keeps nothing once the actor ends.

Ray needs this module importable on every node: install the same `blender-dreamfusion[ray]` everywhere.
"""

from __future__ import annotations

import socket

from blender_dreamfusion.shared import __version__

from .job_host import JobHost


class JobActor(JobHost):
    """Trains a job on the node Ray placed it on, then perhaps the next ones (the gateway hands a warm actor to
    the next job in line). `run` is the only long call; `cancel` and `stop` arrive beside it (the actor is made
    with max_concurrency > 1), and the job sees them at its next step."""

    def ready(self) -> tuple[str, str]:
        """Where the actor runs and which version it is: answered once Ray has placed it."""
        import ray

        return f"{socket.gethostname()} ({ray.get_runtime_context().get_node_id()[:8]})", __version__
