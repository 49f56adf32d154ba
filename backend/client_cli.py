"""`dreamfusion-backend client ...`: submit, watch, pick, cancel, status, result and resume on a running backend."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from blender_dreamfusion.shared import (Accepted, Cancelled, Chosen, Deleted, Error, Failed, Finished, JobSpec,
                                        ListReply, Message, Pick, ProtocolError, Progress, Rejected, StatusReply,
                                        Update)
from blender_dreamfusion.shared.client import DEFAULT_ADDRESS, BackendClient, BackendTimeout, CurveKeys
from blender_dreamfusion.shared.formats import WRITTEN
from blender_dreamfusion.shared.spec_args import add_spec_arguments, spec_from_args
from blender_dreamfusion.shared.states import FINISHED, RUN_ENDS

FAILED = 1
INTERRUPTED = 130


def add_client_parser(verbs) -> None:
    client = verbs.add_parser("client", help="talk to a running backend (submit, watch, pick, cancel, status, "
                                             "result, resume, delete)")
    actions = client.add_subparsers(dest="action", metavar="ACTION", required=True)

    def connection(p: argparse.ArgumentParser) -> None:
        p.add_argument("--backend", default=DEFAULT_ADDRESS, help=f"backend address (default {DEFAULT_ADDRESS})")
        p.add_argument("--server-key", type=Path, help="remote backend: the server's public key file (server.key)")
        p.add_argument("--client-key", type=Path, help="remote backend: this client's secret key file "
                                                        "(NAME.key_secret)")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the backend to answer")

    submit = actions.add_parser("submit", help="start a job")
    submit.add_argument("prompt", help="what to generate, e.g. 'a red cube'")
    submit.add_argument("--wait", action="store_true", help="show progress; exit 0 only when the job finished")
    submit.add_argument("--out", type=Path, help=f"with --wait: also write the final mesh here ({', '.join(WRITTEN)})")
    connection(submit)
    add_spec_arguments(submit)

    for name, text in (("watch", "follow a job (anyone's) until it ends"),
                       ("resume", "continue an interrupted, cancelled or failed job from its checkpoint")):
        p = actions.add_parser(name, help=text)
        p.add_argument("job_id")
        if name == "resume":
            p.add_argument("--wait", action="store_true", help="show progress until the job ends")
        p.add_argument("--out", type=Path, help="write the final mesh here when the job finishes")
        connection(p)

    pick = actions.add_parser("pick", help="best of N: keep this candidate of a job training candidates (before "
                                           "its choice)")
    pick.add_argument("job_id")
    pick.add_argument("candidate", type=int, help="the candidate's index, 0 to candidates - 1")
    connection(pick)

    cancel = actions.add_parser("cancel", help="stop a queued or running job (its checkpoint is kept)")
    cancel.add_argument("job_id")
    connection(cancel)

    delete = actions.add_parser("delete", help="remove a job and its files from the backend (a queued or running "
                                               "one is cancelled first)")
    delete.add_argument("job_id")
    connection(delete)

    status = actions.add_parser("status", help="show one job or all jobs")
    status.add_argument("job_id", nargs="?")
    status.add_argument("--json", action="store_true", help="print JSON")
    connection(status)

    result = actions.add_parser("result", help="fetch a finished job's mesh and file paths")
    result.add_argument("job_id")
    result.add_argument("--out", type=Path, help=f"write the mesh here ({', '.join(WRITTEN)})")
    connection(result)


def run_client(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    spec = None
    if args.action == "submit":
        from blender_dreamfusion.shared.recommended import recommendations

        spec = spec_from_args(args, parser, args.prompt, model_defaults=recommendations)
    if args.action == "pick":
        try:  # refused here as the server would refuse it: the message checks its own fields
            Pick(job_id=args.job_id, candidate=args.candidate)
        except ProtocolError as exc:
            parser.error(str(exc))
    if getattr(args, "out", None) is not None:
        from blender_dreamfusion.shared.formats import written_format

        try:
            written_format(args.out.name)
        except ValueError as exc:
            parser.error(str(exc))
    if (args.server_key is None) != (args.client_key is None):
        parser.error("--server-key and --client-key go together")
    try:
        curve = CurveKeys.from_files(args.server_key, args.client_key) if args.server_key else None
    except (OSError, ValueError) as exc:
        parser.error(f"--client-key/--server-key: {exc}")
    try:
        with BackendClient(args.backend, curve=curve, name="dreamfusion-backend client") as client:
            client.ping(args.timeout)
            return _ACTIONS[args.action](client, args, spec)
    except BackendTimeout as exc:
        print(f"dreamfusion-backend client: {exc}; is `dreamfusion-backend serve` running there"
              f"{' with your key authorised' if curve else ''}?", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        print("\nstopped watching; the job goes on on the backend", file=sys.stderr)
        return INTERRUPTED


def _submit(client: BackendClient, args, spec: JobSpec) -> int:
    init_mesh = init_uvs = None
    if spec.init == "mesh" and spec.init_from:
        # The file is read here and travels with the submit: the backend may be another machine.
        from blender_dreamfusion.shared.mesh import check_init_mesh

        from .mesh_import import MeshFileError, read_mesh_with_uvs

        try:
            init_mesh, init_uvs = read_mesh_with_uvs(spec.init_from)
            check_init_mesh(init_mesh, "--init-from")
        except (MeshFileError, ValueError) as exc:
            print(f"dreamfusion-backend client: --init-from: {exc}", file=sys.stderr)
            return FAILED
        spec = spec.replace(init_from="")
    reply = client.request(client.submit(spec, init_mesh, init_uvs), args.timeout)
    if not isinstance(reply, Accepted):
        return _refused(reply)
    print(f"job {reply.job_id} accepted (seed {reply.spec.seed})", flush=True)
    if not args.wait:
        return 0
    return _follow(client, reply.job_id, reply.spec.steps, args.out)


def _resume(client: BackendClient, args, spec) -> int:
    reply = client.request(client.resume(args.job_id), args.timeout)
    if not isinstance(reply, Accepted):
        return _refused(reply)
    print(f"job {reply.job_id} resumed", flush=True)
    return _follow(client, reply.job_id, reply.spec.steps, args.out) if args.wait else 0


def _watch(client: BackendClient, args, spec) -> int:
    reply = client.request(client.watch(args.job_id), args.timeout)
    if not isinstance(reply, StatusReply):
        return _refused(reply)
    job = reply.jobs[0]
    if job.state in RUN_ENDS:
        print(f"job {job.job_id} is {job.state}" + (f": {job.reason}" if job.reason else ""))
        if job.state == FINISHED and args.out:
            return _result(client, args, spec)
        return 0 if job.state == FINISHED else FAILED
    return _follow(client, job.job_id, job.steps, args.out, start=job.step)


def _cancel(client: BackendClient, args, spec) -> int:
    client.cancel(args.job_id)
    deadline = time.monotonic() + max(args.timeout, 60.0)  # a running job stops after its current step
    while time.monotonic() < deadline:
        for event in client.poll(0.25):
            if isinstance(event, Cancelled) and event.job_id == args.job_id:
                print(f"job {args.job_id} cancelled at step {event.step}")
                return 0
            if isinstance(event, (Rejected, Error)):
                return _refused(event)
            if isinstance(event, (Finished, Failed)) and event.job_id == args.job_id:
                print(f"job {args.job_id} ended ({event.TYPE}) before the cancel took effect")
                return FAILED
    print(f"dreamfusion-backend client: job {args.job_id} did not confirm the cancel in time", file=sys.stderr)
    return FAILED


def _pick(client: BackendClient, args, spec) -> int:
    client.pick(args.job_id, args.candidate)
    deadline = time.monotonic() + max(args.timeout, 60.0)  # the job takes it between two of its steps
    while time.monotonic() < deadline:
        for event in client.poll(0.25):
            if isinstance(event, Chosen) and event.job_id == args.job_id:
                print(event.describe())
                return 0 if (event.candidate, event.by) == (args.candidate, "artist") else FAILED
            if isinstance(event, (Rejected, Error)):
                return _refused(event)
            if isinstance(event, (Finished, Failed, Cancelled)) and event.job_id == args.job_id:
                print(f"job {args.job_id} ended ({event.TYPE}) before the pick took effect")
                return FAILED
    print(f"dreamfusion-backend client: job {args.job_id} did not confirm the pick in time", file=sys.stderr)
    return FAILED


def _delete(client: BackendClient, args, spec) -> int:
    # A running job is deleted once it has stopped, after its current step.
    reply = client.request(client.delete(args.job_id), max(args.timeout, 60.0))
    if not isinstance(reply, Deleted):
        return _refused(reply)
    print(f"job {reply.job_id} deleted ({reply.freed_bytes / 2**20:.1f} MiB freed)")
    return 0


def _status(client: BackendClient, args, spec) -> int:
    if args.job_id is None:
        jobs = client.list_all(args.timeout)  # every page
    else:
        reply = client.request(client.status(args.job_id), args.timeout)
        if not isinstance(reply, (StatusReply, ListReply)):
            return _refused(reply)
        jobs = reply.jobs
    if args.json:
        print(json.dumps([dataclasses.asdict(j) for j in jobs], indent=2))
        return 0
    if not jobs:
        print("no jobs")
    for job in jobs:
        line = f"{job.job_id}  {job.state:<11}  {job.step:>6}/{job.steps:<6}  {job.prompt}"
        line += f"  [continues {job.parent}]" if job.parent else ""
        line += f"  on {job.node}" if job.node else ""
        print(line + (f"  ({job.reason})" if job.reason else ""))
    return 0


def _result(client: BackendClient, args, spec) -> int:
    reply = client.request(client.result(args.job_id), max(args.timeout, 30.0))
    if not isinstance(reply, Finished):
        return _refused(reply)
    _report_finished(reply, args.out)
    return 0


def _follow(client: BackendClient, job_id: str, steps: int, out: Path | None, start: int = 0) -> int:
    from tqdm import tqdm

    bar = tqdm(total=steps, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr, desc=job_id)
    try:
        while True:
            for event in client.poll(0.5):
                if getattr(event, "job_id", None) != job_id:
                    continue
                if isinstance(event, Chosen):
                    bar.write(event.describe())
                elif isinstance(event, (Progress, Update)):
                    bar.update(event.step - bar.n)
                    if event.loss is not None:
                        bar.set_postfix(loss=f"{event.loss:.4g}", refresh=False)
                elif isinstance(event, Finished):
                    bar.update(event.step - bar.n)
                    bar.close()
                    _report_finished(event, out)
                    return 0
                elif isinstance(event, (Failed, Cancelled)):
                    bar.close()
                    reason = event.reason if isinstance(event, Failed) else f"cancelled at step {event.step}"
                    print(f"dreamfusion-backend client: job {job_id} {event.TYPE}: {reason}", file=sys.stderr)
                    return FAILED
                elif isinstance(event, Rejected):
                    bar.close()
                    return _refused(event)
            if not client.server_alive and client.last_heard:
                bar.close()
                print(f"dreamfusion-backend client: lost the backend at {client.address}; the job may still "
                      f"run: `dreamfusion-backend client watch {job_id}`", file=sys.stderr)
                return FAILED
    finally:
        bar.close()


def _report_finished(event: Finished, out: Path | None) -> None:
    mesh = event.mesh
    textured = f", {event.texture.size[0]} px texture" if event.texture is not None else ""
    print(f"job {event.job_id} finished: {mesh.vertex_count} vertices, {mesh.triangle_count} triangles{textured}, "
          f"{event.step} steps in {event.elapsed:.1f} s")
    for kind, path in event.files.items():
        print(f"  {kind}: {path} (on the backend)")
    if event.checkpoint:
        print(f"  checkpoint: {event.checkpoint} (on the backend)")
    if out is not None:
        from blender_dreamfusion.backend.export import export_result, lost_texture_note

        if mesh.vertex_count:
            for path in export_result(mesh, out, event.texture):
                print(f"wrote {path}")
            if note := lost_texture_note(out, event.texture):
                print(f"note: {note}", file=sys.stderr)
        else:
            print("dreamfusion-backend client: the result mesh is empty; nothing written", file=sys.stderr)


def _refused(reply: Message) -> int:
    reason = getattr(reply, "reason", f"unexpected answer {reply.TYPE!r}")
    field = getattr(reply, "field", None)
    where = f" ({field})" if field and field != "job_id" else ""
    print(f"dreamfusion-backend client: {reply.TYPE}{where}: {reason}", file=sys.stderr)
    return FAILED


_ACTIONS = {"submit": _submit, "resume": _resume, "watch": _watch, "cancel": _cancel, "status": _status,
            "result": _result, "delete": _delete, "pick": _pick}
