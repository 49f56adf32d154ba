"""The add-on's one connection to a backend: client socket, job tracker, and the backend it launched.

Module state on purpose: sockets and processes cannot live in Blender's data
(they are not saved), and there is one backend per Blender session.
Everything here returns at once; the timer in `client_loop` does the waiting.
No `bpy`: what a job is, and what became of each submit, is the tracker's
(`job_tracker.py`); the Blender layer draws its view of it into the scene.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

from ..shared.client import BackendClient, BackendTimeout, CurveKeys
from ..shared.jobspec import JobSpec
from ..shared.mesh import MeshData
from ..shared.messages import ListReply
from ..shared.states import INTERRUPTED
from .job_tracker import Applied, JobTracker
from .local_backend import LocalBackend, LocalBackendError, backend_command
from .refine import RefineTarget

#: A local backend that has not said where it listens by then is reported as stuck.
START_TIMEOUT = 120.0


@dataclass
class PendingSubmit:
    """A job to send once the local backend listens (Generate or a refinement pressed while it starts)."""

    spec: JobSpec
    scene_name: str = ""
    init_mesh: MeshData | None = None
    target: RefineTarget | None = None
    #: The start mesh's own UVs, one per triangle corner (None: it has none).
    init_uvs: object | None = None


@dataclass
class Status:
    state: str   # "off", "starting", "connecting", "connected", "lost", "error"
    text: str


class Session:
    def __init__(self) -> None:
        self.client: BackendClient | None = None
        self.backend: LocalBackend | None = None
        self.tracker = JobTracker()
        self.error = ""
        self.notices: list[str] = []
        #: Generate pressed while the local backend was still starting: sent once it listens.
        self.pending_submits: list[PendingSubmit] = []
        #: Refinements that will never be sent (the backend did not start): their objects are to be removed.
        self.dropped_targets: list[RefineTarget] = []
        self._lost = False

    # --- lifetime ----------------------------------------------------------------------

    def start_local(self, executable: str, device: str = "auto", data_dir: str = "",
                    allow_paths: Iterable[str] = ()) -> None:
        """Launch `dreamfusion-backend serve` on a free loopback port; `tick` connects once it listens.
        `allow_paths`: folders whose local models the backend may load."""
        if self.backend is not None and self.backend.running:
            return
        self.disconnect()
        self.error = ""
        try:
            self.backend = LocalBackend(backend_command(executable), device=device, data_dir=data_dir,
                                        allow_paths=allow_paths)
            self.backend.start()
        except LocalBackendError as exc:
            self.backend = None
            self.error = str(exc)
            raise

    def connect(self, address: str, server_key: str = "", client_secret_key: str = "") -> None:
        self.disconnect()
        self.error = ""
        curve = None
        if server_key or client_secret_key:
            try:
                curve = CurveKeys.from_files(server_key, client_secret_key)
            except (OSError, ValueError) as exc:
                self.error = f"CURVE keys: {exc}"
                raise ValueError(self.error) from None
        self._open(address, curve)

    def _open(self, address: str, curve: CurveKeys | None = None) -> None:
        self.client = BackendClient(address, curve=curve, name="blender", heartbeat_interval=2.0)
        # Reconnecting (e.g. to a restarted backend) picks up the jobs we were following.
        for job_id, view in self.tracker.jobs.items():
            if view.active or view.state == INTERRUPTED:
                self.client.watch(job_id)

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def stop_backend(self) -> None:
        self.disconnect()
        if self.backend is not None:
            self.backend.stop()
            self.backend = None
        self.tracker.connection_lost()

    def shutdown(self) -> None:
        """unregister / quit: close the socket and stop a backend we launched."""
        self.stop_backend()

    # --- per tick ---------------------------------------------------------------------------

    def tick(self) -> Applied | None:
        """Connect to a launched backend once it listens; return this tick's events (never blocks)."""
        if self.backend is not None and self.client is not None and not self.backend.running:
            # Our backend died (crash, OOM, killed): say so now rather than after the heartbeat timeout.
            self._backend_exited()
            self.disconnect()
            return Applied(changed=self.tracker.connection_lost())
        if self.backend is not None and self.client is None:
            endpoint = self.backend.poll_endpoint()
            if endpoint:
                self._open(endpoint)
                pending, self.pending_submits = self.pending_submits, []
                for job in pending:
                    self.submit(job.spec, job.scene_name, job.init_mesh, job.target, job.init_uvs)
            elif not self.backend.running:
                self._backend_exited()
                if self.pending_submits:
                    self.notices.append(f"{len(self.pending_submits)} job(s) not sent: {self.error}")
                    self.dropped_targets += [job.target for job in self.pending_submits if job.target is not None]
                    self.pending_submits = []
            elif time.monotonic() - self.backend.started_at > START_TIMEOUT:
                self.error = f"the backend has not started after {START_TIMEOUT:g} s: {self.backend.last_line()}"
        if self.client is None:
            return None
        events = self.client.poll(0)
        for event in events:
            if isinstance(event, ListReply) and event.next_offset is not None:
                try:
                    self.client.list(event.next_offset)  # a refresh covers every page, one per tick
                except BackendTimeout:  # gone again: the next refresh starts over
                    pass
        applied = self.tracker.apply(events)
        self.notices = (self.notices + applied.notices)[-20:]
        alive = self.client.server_alive
        if self._lost and alive:
            self._lost = False
            self.client.list()  # refresh every job's state after an outage
            # Silent that long, the server may have taken us for gone too and dropped our subscriptions (a
            # worker holding the GIL through a model load or a mesh fit starves its loop): follow our jobs again.
            for job_id, view in self.tracker.jobs.items():
                if view.active or view.state == INTERRUPTED:
                    try:
                        self.client.watch(job_id)
                    except BackendTimeout:
                        break
        elif not self._lost and not alive and self.client.last_heard > 0:
            self._lost = True
            applied.changed |= self.tracker.connection_lost()
        return applied

    def settings_changed(self) -> None:
        """The backend preferences were edited: an error about the old ones (a missing executable, a wrong address)
        no longer applies, so the status line stops repeating it. A backend that runs or a connection that is
        open is left alone: new settings take effect at the next start or connect."""
        if self.client is None and (self.backend is None or not self.backend.running):
            self.error = ""

    def _backend_exited(self) -> None:
        self.error = f"the backend exited ({self.backend.exit_code}): {self.backend.last_line()}"
        self.backend = None

    # --- commands ---------------------------------------------------------------------------

    def submit(self, spec: JobSpec, scene_name: str = "", init_mesh: MeshData | None = None,
               target: RefineTarget | None = None, init_uvs=None) -> str:
        """Send a job (`init_mesh`: the start mesh of init = mesh, `init_uvs` its own UVs per triangle corner);
        `target` says where a refinement's result goes once the backend names the job."""
        client = self._require_client()
        request_id = client.submit(spec, init_mesh, init_uvs)
        self.tracker.submitted(request_id, spec, scene_name, target)
        return request_id

    def cancel(self, job_id: str) -> None:
        self._require_client().cancel(job_id)

    def pick(self, job_id: str, candidate: int) -> None:
        """Best of N: the artist's pick of a candidate, before the job's choice."""
        self._require_client().pick(job_id, candidate)

    def resume(self, job_id: str) -> None:
        self._require_client().resume(job_id)

    def watch(self, job_id: str) -> None:
        self._require_client().watch(job_id)

    def delete(self, job_id: str) -> None:
        """Remove the job and its files from the backend (it cancels a running one first)."""
        self._require_client().delete(job_id)

    def _require_client(self) -> BackendClient:
        if self.client is None:
            raise BackendTimeout("not connected to a backend")
        return self.client

    # --- what the panel shows ------------------------------------------------------------

    def status(self) -> Status:
        if self.error:
            return Status("error", self.error)
        if self.backend is not None and self.client is None:
            return Status("starting", "starting the local backend…")
        if self.client is None:
            return Status("off", "not connected")
        if self.client.server_alive:
            where = "local backend" if self.backend is not None else self.client.address
            return Status("connected", f"connected to {where}")
        if self.client.last_heard > 0:
            return Status("lost", "lost contact with the backend (results so far are kept)")
        return Status("connecting", f"connecting to {self.client.address}…")

    def job_slots(self) -> int:
        """Jobs the backend can usefully take at once (what its welcome said; 1 before it has answered)."""
        welcome = self.client.welcome if self.client is not None else None
        return welcome.job_slots if welcome is not None else 1

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.server_alive


#: The one session of this Blender process.
SESSION = Session()
