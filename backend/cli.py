"""`dreamfusion-backend`: the backend's command line.

Verbs that later issues build print "not implemented yet" and exit 3 so
scripts can tell them apart from a usage error (2).
"""

from __future__ import annotations

import argparse
import json
import sys

from shared import PROTOCOL_TAG, __version__
from shared.spec_args import add_spec_arguments, spec_from_args

NOT_IMPLEMENTED = 3
_PENDING = {
    "generate": "generate a mesh for a prompt without a server",
    "serve": "run the ZeroMQ job service",
    "client": "talk to a running backend",
    "keys": "make CURVE key pairs for remote use",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreamfusion-backend",
                                     description="DreamFusion for Blender: text-to-3D backend.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("version", help="print the package and protocol versions")
    spec = verbs.add_parser("spec", help="validate a job's settings and print the full JobSpec as JSON")
    spec.add_argument("prompt", help="what to generate, e.g. 'a red cube'")
    add_spec_arguments(spec)
    for verb, text in _PENDING.items():
        pending = verbs.add_parser(verb, help=f"{text} (not implemented yet)")
        pending.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb == "version":
        print(f"blender-dreamfusion {__version__}, protocol {PROTOCOL_TAG.decode()}")
        return 0
    if args.verb == "spec":
        job = spec_from_args(args, parser, args.prompt)
        print(json.dumps(job.to_dict(), indent=2))
        return 0
    print(f"dreamfusion-backend {args.verb}: not implemented yet", file=sys.stderr)
    return NOT_IMPLEMENTED


if __name__ == "__main__":
    sys.exit(main())
