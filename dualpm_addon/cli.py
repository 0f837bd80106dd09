"""The `dualpm` command line: one entry point, one module per subcommand.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`,
imported only when that subcommand runs, so `dualpm fit` never pays for torch and the core stays
free of it. Training commands live in `training/` (torch); they are looked up by name here, and
`training/` is not part of the built extension, so inside Blender they report that they need a
development checkout.

Every failure the user can cause is a DualPMError: printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import DualPMError

# name -> (module, one-line help)
COMMANDS = {
    "reconstruct": ("operators.headless", "photo(s) to rigged, animated .blend, .glb, preview and summary"),
    "predict": ("dualpm_addon.commands.predict", "photo(s) to dual point maps (.npz)"),
    "fit": ("dualpm_addon.commands.fit", "dual point maps to fitted skeletons (.json)"),
    "serve": ("model_server.__main__", "run the inference server (KServe v2 over HTTP)"),
    "synth": ("training.synthesize", "render synthetic training samples (.npz)"),
    "train": ("training.train", "train the DualPM predictor"),
    "eval": ("training.evaluate", "evaluate a model on held-out data"),
    "export": ("training.export", "export a trained checkpoint to ONNX"),
    "retarget": ("dualpm_addon.commands.retarget", "retarget BVH motion onto a rig"),
    "animate": ("operators.animate_headless", "video to the animal's motion: .blend, .glb, .bvh, .json, .mp4"),
    "bench": ("dualpm_addon.commands.bench", "run the benchmarks and write JSON"),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="dualpm", description="DualPM for Blender: one photo to a rigged animal.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"dualpm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser, sub


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, sub = build_parser()
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if argv and argv[0] == "--version":
        from . import __version__

        print(f"dualpm {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] not in COMMANDS:
        print(f"dualpm: unknown command {argv[0]!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    name = argv[0]
    module_name, help_ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or "a module"
        print(f"dualpm {name}: needs {missing}, which is not installed here "
              f"(training commands need the development setup; see README)", file=sys.stderr)
        return 2
    cmd = argparse.ArgumentParser(prog=f"dualpm {name}", description=help_)
    module.add_arguments(cmd)
    args = cmd.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except DualPMError as e:
        print(f"dualpm {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dualpm {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
