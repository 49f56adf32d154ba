"""`dreamfusion-backend`: the backend's command line.

Exit codes: 0 done, 1 failed, 2 usage error, 130 interrupted.
Heavy imports (torch, diffusers) happen inside the verbs that need them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blender_dreamfusion.shared import PROTOCOL_TAG, __version__
from blender_dreamfusion.shared.names import slugify
from blender_dreamfusion.shared.recommended import recommendations
from blender_dreamfusion.shared.spec_args import add_spec_arguments, spec_from_args

from .client_cli import add_client_parser, run_client
from .server.commands import add_serve_parser, run_keys, run_serve
from .threads import add_thread_arguments, check_thread_arguments

FAILED = 1
INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreamfusion-backend",
                                     description="DreamFusion for Blender: text-to-3D backend.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("version", help="print the package and protocol versions")

    gen = verbs.add_parser("generate", help="optimise a mesh for a prompt and write it to a file")
    gen.add_argument("prompt", help="what to generate, e.g. 'a red cube'")
    gen.add_argument("--out", type=Path, default=None,
                     help="output mesh: .glb (default, named after the prompt), .obj or .ply")
    gen.add_argument("--save-every", nargs=2, metavar=("K", "DIR"), default=None,
                     help="every K steps also write the mesh and a checkpoint into DIR")
    gen.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="where to run (auto: CUDA when available)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    add_thread_arguments(gen)
    add_spec_arguments(gen)

    spec = verbs.add_parser("spec", help="validate a job's settings and print the full JobSpec as JSON")
    spec.add_argument("prompt", help="what to generate, e.g. 'a red cube'")
    add_spec_arguments(spec)

    tiny = verbs.add_parser("tiny-model", help="write a tiny random Stable-Diffusion- or DeepFloyd-IF-shaped model "
                                               "(for trying the pipeline offline; it knows nothing about images)")
    tiny.add_argument("folder", type=Path)
    tiny.add_argument("--kind", choices=("sd", "if"), default="sd",
                      help="sd: latent (VAE, CLIP); if: pixel space (T5, learned variance), as DeepFloyd IF stage I")

    add_serve_parser(verbs)
    add_client_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb == "version":
        print(f"blender-dreamfusion {__version__}, protocol {PROTOCOL_TAG.decode()}")
        return 0
    if args.verb == "spec":  # the spec `generate` would run: the model's recommendations included
        job = spec_from_args(args, parser, args.prompt, model_defaults=recommendations)
        print(json.dumps(job.to_dict(), indent=2))
        return 0
    if args.verb == "generate":
        return _generate(args, parser)
    if args.verb == "tiny-model":
        from blender_dreamfusion.backend.tiny_model import write_tiny_if, write_tiny_sd

        print((write_tiny_if if args.kind == "if" else write_tiny_sd)(args.folder))
        return 0
    if args.verb == "serve":
        return run_serve(args, parser)
    if args.verb == "keys":
        return run_keys(args, parser)
    if args.verb == "client":
        return run_client(args, parser)
    parser.error(f"unknown verb {args.verb!r}")
    return 2


def _generate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from blender_dreamfusion.shared.recommended import recommendations

    job = spec_from_args(args, parser, args.prompt, model_defaults=recommendations)
    threads = check_thread_arguments(args, parser)
    threads.apply()  # before torch loads: OpenMP reads its environment once
    out = args.out or Path(slugify(job.prompt, separator="_", empty="mesh") + ".glb")
    save_every, save_dir = 0, None
    if args.save_every:
        try:
            save_every = int(args.save_every[0])
        except ValueError:
            save_every = 0
        if save_every < 1:
            parser.error(f"--save-every: K = {args.save_every[0]!r} must be a whole number >= 1")
        save_dir = Path(args.save_every[1])

    from blender_dreamfusion.backend.candidates import choice_line
    from blender_dreamfusion.backend.checkpoint import CheckpointError
    from blender_dreamfusion.backend.generate import generate
    from blender_dreamfusion.backend.guidance import ModelLoadError
    from blender_dreamfusion.backend.job_run import JobError

    try:
        result = generate(job, out, device=args.device, save_every=save_every, save_dir=save_dir,
                          show_progress=not args.quiet, threads=threads)
    except (JobError, ModelLoadError, CheckpointError, ValueError) as exc:
        print(f"dreamfusion-backend generate: {exc}", file=sys.stderr)
        return FAILED
    mesh = result.asset.mesh if result.asset is not None else result.extraction.mesh
    if result.out is None:
        print(f"dreamfusion-backend generate: no mesh written ({result.extraction.message}); checkpoint kept at "
              f"{result.checkpoint}", file=sys.stderr)
        return FAILED
    if result.choice is not None:
        print(choice_line(result.choice))
    if result.extraction.message:
        print(f"note: {result.extraction.message}", file=sys.stderr)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    texture = result.asset.texture if result.asset is not None else None
    textured = f", {texture.size[0]} px texture" if texture is not None else ""
    print(f"wrote {result.out} ({mesh.vertex_count} vertices, {mesh.triangle_count} triangles{textured}, seed "
          f"{job.seed}, {result.steps} steps in {result.seconds:.1f} s); checkpoint {result.checkpoint}")
    for extra in result.files[1:]:
        print(f"wrote {extra}")
    return INTERRUPTED if result.stopped_early else 0


if __name__ == "__main__":
    sys.exit(main())
