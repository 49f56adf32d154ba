"""The `batch` command line: `blender -b -c dreamfusion batch --prompts FILE --out DIR [JobSpec flags] [--backend ADDR ...]`.

Every JobSpec field has a flag (the same ones `dreamfusion-backend generate`
takes); they apply to every prompt unless the prompt file's row sets it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..shared.errors import SpecError
from ..shared.jobspec import jobspec_knobs
from ..shared.spec_args import add_spec_arguments, flag_name

PROG = "blender -b -c dreamfusion batch"
#: Exit statuses: every prompt finished / some prompt failed or was skipped / bad arguments or prompt file.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: Interrupted (Ctrl-C or SIGTERM), as shells report a SIGINT death.
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    pass


@dataclass
class BatchOptions:
    prompts: Path
    out: Path
    backends: list[str] = field(default_factory=list)
    #: JobSpec values given as flags (only the ones given).
    flags: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    backend_executable: str = ""
    device: str = ""
    jobs_dir: str = ""
    server_key: str = ""
    client_secret_key: str = ""
    progress_every: float = 10.0
    backend_timeout: float = 30.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Generate a mesh for every prompt in a file; write .glb files, one .blend with "
                               "all results side by side, and summary.json.",
        epilog="Exit status: 0 every prompt finished; 1 a prompt failed or a line was skipped; 2 bad arguments; "
               "130 interrupted.")
    parser.add_argument("--prompts", type=Path, required=True, metavar="FILE",
                        help="prompt list: .txt (one per line, # comments), .csv (a 'prompt' column plus JobSpec "
                             "columns), .json (a list) or .jsonl. A row's 'init_mesh' (a .glb/.gltf/.obj/.ply file, "
                             "relative to the prompt file) starts it from that mesh; with 'lock_geometry' true "
                             "(or --lock-geometry) only its colours are generated")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (made if missing)")
    parser.add_argument("--backend", dest="backends", action="append", default=[], metavar="ADDRESS",
                        help="a running backend, e.g. tcp://127.0.0.1:5555; repeat to spread the prompts over "
                             "several (each runs one at a time). Default: start a local backend as the panel does")
    parser.add_argument("--backend-executable", default="", metavar="PATH",
                        help="the local backend to start (default: the add-on preferences' Backend executable)")
    parser.add_argument("--device", default="", choices=["", "auto", "cpu", "cuda"],
                        help="device for the local backend (default: the add-on preferences')")
    parser.add_argument("--jobs-dir", default="", metavar="DIR",
                        help="the local backend's job folder (default: the add-on preferences')")
    parser.add_argument("--server-key", default="", metavar="FILE", help="CURVE: the backends' server.key")
    parser.add_argument("--client-secret-key", default="", metavar="FILE",
                        help="CURVE: this client's .key_secret")
    parser.add_argument("--progress-every", type=float, default=10.0, metavar="SECONDS",
                        help="seconds between step lines for running prompts (default 10)")
    parser.add_argument("--backend-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="drop a backend that does not answer at first, or falls silent, for this long; its "
                             "prompt runs once more on another backend (default 30)")
    add_spec_arguments(parser)
    return parser


def parse_batch_args(argv: list[str]) -> BatchOptions:
    """Options from the words after `batch`; UsageError (with argparse's message) on bad ones."""
    parser = build_parser()
    parser.exit_on_error = False
    # argparse prints and exits on errors; inside Blender a command must return its status instead.
    parser.error = lambda message: (_ for _ in ()).throw(UsageError(f"{PROG}: error: {message}"))  # type: ignore
    try:
        args = parser.parse_args(argv)
    except argparse.ArgumentError as exc:
        raise UsageError(f"{PROG}: error: {exc}") from None
    values = vars(args)
    for flag, value in (("--progress-every", args.progress_every), ("--backend-timeout", args.backend_timeout)):
        if not value > 0 or value == float("inf"):
            raise UsageError(f"{PROG}: error: {flag} = {value:g}; allowed: a number of seconds above 0")
    flags = {k: (list(v) if isinstance(v, list) else v) for k, v in values.items() if k in jobspec_knobs()}
    for name, value in flags.items():  # each flag on its own; rows combine them with their own fields later
        try:
            jobspec_knobs()[name].check(name, value)
        except SpecError as exc:
            raise UsageError(f"{PROG}: error: {flag_name(name)}: {exc}") from None
    for address in args.backends:
        if "://" not in address:
            raise UsageError(f"{PROG}: error: --backend {address!r}: expected an address like tcp://HOST:PORT")
    return BatchOptions(
        prompts=args.prompts, out=args.out, backends=list(args.backends),
        flags=flags,
        preset=values.get("preset"), backend_executable=args.backend_executable, device=args.device,
        jobs_dir=args.jobs_dir, server_key=args.server_key, client_secret_key=args.client_secret_key,
        progress_every=args.progress_every, backend_timeout=args.backend_timeout)


def usage() -> str:
    return build_parser().format_help()
