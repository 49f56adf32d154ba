"""`dreamfusion-backend serve` and `dreamfusion-backend keys generate`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path

from ..threads import add_thread_arguments, check_thread_arguments
from .admission import Limit, ServerLimits, format_size, parse_size
from .jobs import default_data_dir
from .security import SecurityError

FAILED = 1


def add_serve_parser(verbs) -> None:
    serve = verbs.add_parser("serve", help="run the ZeroMQ job service")
    serve.add_argument("--bind", default="tcp://127.0.0.1:5555",
                       help="address to listen on (default tcp://127.0.0.1:5555; port 0 picks a free port). "
                            "Anything but loopback needs --curve-dir")
    serve.add_argument("--workers", type=int, default=1, help="jobs trained at once (default 1: one per GPU)")
    serve.add_argument("--data-dir", type=Path, default=None,
                       help=f"where jobs, checkpoints and results live (default {default_data_dir()})")
    serve.add_argument("--curve-dir", type=Path, default=None,
                       help="CURVE key folder from `keys generate`: only its authorised clients may connect")
    serve.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    serve.add_argument("--heartbeat", type=float, default=5.0, help="heartbeat interval in seconds")
    add_thread_arguments(serve, workers=True)
    add_limit_arguments(serve.add_argument_group("limits", "what keeps disk, memory and the queue bounded (0 turns "
                                                           "one off)"))
    serve.add_argument("--allow-path", action="append", type=Path, default=[], metavar="DIR",
                       help="a folder whose local models and checkpoints jobs may use (repeatable); besides these "
                            "only the data folder's own jobs may be named")
    serve.add_argument("--shared-jobs", action=argparse.BooleanOptionalAction, default=None,
                       help="let clients see (list, watch, fetch) each other's jobs (default: yes on loopback, no "
                            "with --curve-dir, where jobs belong to the client key that submitted them)")
    ray = serve.add_argument_group("Ray", "run as a gateway: each job trains as a Ray actor on any node of a "
                                          "cluster with room (needs the [ray] extra on the gateway and every node)")
    ray.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                     help="the cluster: 'auto' (the default: the one `ray start` runs here, or RAY_ADDRESS), "
                          "HEAD:6379, ray://HEAD:10001, or 'local' (a one-machine Ray inside the gateway)")
    ray.add_argument("--ray-gpus", type=float, default=1.0, metavar="N",
                     help="GPUs each job reserves (default 1; 0 for CPU-only nodes; fractions share a GPU)")
    ray.add_argument("--ray-cpus", type=float, default=1.0, metavar="N", help="CPUs each job reserves (default 1)")
    ray.add_argument("--ray-resource", action="append", default=[], metavar="NAME=AMOUNT",
                     help="a custom resource each job reserves as well, e.g. a100=1 for nodes started with "
                          "--resources '{\"a100\": 1}' (repeatable)")
    ray.add_argument("--ray-reuse-actors", action=argparse.BooleanOptionalAction, default=True,
                     help="hand a finished job's actor (its GPU and loaded model) to the next job in line instead "
                          "of starting a process per job (default: yes)")
    ray.add_argument("--ray-max-attempts", type=int, default=3, metavar="N",
                     help="times a job may start before it fails when its node keeps being lost (default 3)")
    serve.add_argument("--parent-pid", type=int, default=None, metavar="PID",
                       help="stop (running jobs become interrupted) when process PID exits; the Blender add-on "
                            "passes its own, so a crashed Blender leaves no backend behind (POSIX)")

    keys = verbs.add_parser("keys", help="make CURVE key pairs for remote use")
    actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    generate = actions.add_parser("generate", help="write a server key pair and client key pairs into DIR")
    generate.add_argument("folder", type=Path)
    generate.add_argument("--client", action="append", default=None, metavar="NAME",
                          help="a client to make a key pair for and authorise (repeatable; default: 'blender')")


def run_serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.workers < 1 or args.workers > 64:
        parser.error(f"--workers: {args.workers} is out of range; allowed: 1 to 64")
    if not args.heartbeat > 0:
        parser.error(f"--heartbeat: {args.heartbeat} must be above 0 seconds")
    check_thread_arguments(args, parser)
    limits = limits_from(args, parser)
    for folder in args.allow_path:
        if not folder.expanduser().is_dir():
            parser.error(f"--allow-path: {folder} is not a folder")
    ray = _ray_options(args, parser)
    from ..job_run import JobError
    from .service import Server, ServerConfig

    config = ServerConfig(bind=args.bind, workers=args.workers, data_dir=args.data_dir or default_data_dir(),
                          curve_dir=args.curve_dir, device=args.device, heartbeat_interval=args.heartbeat,
                          limits=limits, allow_paths=tuple(args.allow_path), shared_jobs=args.shared_jobs, ray=ray,
                          threads=args.threads, reserve_cores=args.reserve_cores)
    try:
        server = Server(config)
    except (SecurityError, JobError, *_ray_errors(ray)) as exc:
        print(f"dreamfusion-backend serve: {exc}", file=sys.stderr)
        return FAILED
    except Exception as exc:  # zmq.ZMQError: address in use, bad endpoint
        print(f"dreamfusion-backend serve: cannot listen on {args.bind}: {exc}", file=sys.stderr)
        return FAILED
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.stop())
    if args.parent_pid:
        _stop_with_parent(args.parent_pid, server.stop)
    auth = " (CURVE)" if args.curve_dir else ""
    gateway = f"; jobs run on the Ray cluster at {ray.address}" if ray is not None else ""
    print(f"dreamfusion-backend serve: listening on {server.endpoint}{auth} with data in {config.data_dir}"
          f"{gateway}", flush=True)
    server.serve_forever()
    print("dreamfusion-backend serve: stopped; running jobs are interrupted and can be resumed", flush=True)
    return 0


def _ray_options(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """The `--ray*` flags as RayOptions (None without --ray), each checked with its allowed range."""
    if args.ray is None:
        defaults = (("--ray-gpus", args.ray_gpus, 1.0), ("--ray-cpus", args.ray_cpus, 1.0),
                    ("--ray-resource", args.ray_resource, []), ("--ray-max-attempts", args.ray_max_attempts, 3),
                    ("--no-ray-reuse-actors", args.ray_reuse_actors, True))
        given = [flag for flag, value, default in defaults if value != default]
        if given:
            parser.error(f"{given[0]} only applies with --ray (jobs then run on a Ray cluster)")
        return None
    from .ray_runner import RayOptions

    if not args.ray.strip() or len(args.ray) > 500:
        parser.error("--ray: give a cluster address (HEAD:6379, ray://HEAD:10001), 'auto' or 'local'")
    for flag, value in (("--ray-gpus", args.ray_gpus), ("--ray-cpus", args.ray_cpus)):
        if not 0 <= value <= 1024:
            parser.error(f"{flag}: {value} is out of range; allowed: 0 to 1024")
    if not 1 <= args.ray_max_attempts <= 100:
        parser.error(f"--ray-max-attempts: {args.ray_max_attempts} is out of range; allowed: 1 to 100")
    resources = {}
    for item in args.ray_resource:
        name, sep, amount = item.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not sep or not name.strip() or not 0 < value <= 1e6:
            parser.error(f"--ray-resource: {item!r} must be NAME=AMOUNT with AMOUNT above 0 (at most 1000000)")
        resources[name.strip()] = value
    return RayOptions(address=args.ray.strip(), num_gpus=args.ray_gpus, num_cpus=args.ray_cpus,
                      resources=resources, max_attempts=args.ray_max_attempts, device=args.device,
                      reuse_actors=args.ray_reuse_actors)


def _ray_errors(ray) -> tuple[type[Exception], ...]:
    if ray is None:
        return ()
    from .ray_runner import RayError

    return (RayError,)


def _stop_with_parent(pid: int, stop) -> None:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return

    def watch() -> None:
        while True:
            time.sleep(2.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                print(f"dreamfusion-backend serve: parent process {pid} is gone; stopping", flush=True)
                stop()
                return
            except PermissionError:  # alive, just not ours to signal
                pass

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_keys(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .security import generate_keys

    try:
        written = generate_keys(args.folder, args.client or ["blender"])
    except SecurityError as exc:
        print(f"dreamfusion-backend keys: {exc}", file=sys.stderr)
        return FAILED
    for path in written:
        print(path)
    print(f"start the server with --curve-dir {args.folder}; give each client server.key and its own "
          "clients/NAME.key_secret", file=sys.stderr)
    return 0


def _flag(field: dataclasses.Field) -> str:
    return "--" + field.name.replace("_", "-")


def add_limit_arguments(group) -> None:
    """One flag per ServerLimits field (`--max-jobs` for max_jobs), its help and default from the field."""
    for field in dataclasses.fields(ServerLimits):
        limit: Limit = field.metadata["limit"]
        shown = format_size(field.default) if limit.size else field.default
        default = str(shown).replace(" ", "") if limit.size else field.default
        group.add_argument(_flag(field), dest=field.name, type=str if limit.size else int, default=default,
                           metavar="SIZE" if limit.size else "N", help=limit.help.format(default=shown))


def limits_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ServerLimits:
    """The ServerLimits the flags say; a value out of its range is the parser's error, naming the flag."""
    values = {}
    for field in dataclasses.fields(ServerLimits):
        limit: Limit = field.metadata["limit"]
        value = getattr(args, field.name)
        if limit.size:
            try:
                value = parse_size(value)
            except ValueError as exc:
                parser.error(f"{_flag(field)}: {exc}")
        if not 0 <= value <= limit.maximum:
            parser.error(f"{_flag(field)}: {value} is out of range; allowed: 0 (no limit) to {limit.maximum}")
        values[field.name] = value
    return ServerLimits(**values)

