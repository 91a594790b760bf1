"""``bidense`` command line: train | eval | predict | summary | demo | export | benchmark.

Each sub-command is a thin wrapper over a library function; errors the user can fix are printed
as one line ``bidense: error: ...`` with exit code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


class UserError(Exception):
    """A mistake in the command line, a config, a file: reported in one line."""


def _repo_configs() -> list[Path]:
    here = Path(__file__).resolve()
    return [Path.cwd() / "configs", here.parents[2] / "configs"]


def resolve_config(name: str) -> Path:
    """A config path, or a preset name looked up in ``./configs`` and the repository's configs."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        return path
    for folder in _repo_configs():
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    raise UserError(f"{name}: no such config file or preset (looked in ./configs)")


def parse_input_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--input '{text}' must look like 1x3x480x480") from None
    if len(shape) != 4 or min(shape) < 1:
        raise UserError(f"--input '{text}' must be four positive sizes NxCxHxW")
    return shape


# -- sub-commands ---------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from .engine.config import load_config
    from .engine.trainer import train

    cfg = load_config(resolve_config(args.config), args.overrides)
    result = train(cfg, run_dir=args.run_dir, resume=args.resume, quiet=args.quiet)
    print(f"run directory: {result['run_dir']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .engine.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.overrides, split=args.split)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        for key, value in metrics.items():
            if isinstance(value, float):
                print(f"{key:>12}: {value:.4f}")
            elif not isinstance(value, list):
                print(f"{key:>12}: {value}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .engine.predict import predict_files

    written = predict_files(
        args.checkpoint, args.inputs, args.output, opacity=args.opacity, size=args.size
    )
    print(f"wrote {len(written)} predictions to {args.output}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from .profile import summary_main

    shape = parse_input_shape(args.input)
    text = summary_main(
        args.model,
        args.method,
        args.task,
        shape,
        num_classes=args.num_classes,
        as_json=args.json,
        paper_compat=args.paper_compat,
    )
    print(text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .engine.demo import run_demo

    report = run_demo(args.output, quick=args.quick, epochs=args.epochs)
    print(f"report: {report}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export.bdn import export_checkpoint

    info = export_checkpoint(args.checkpoint, args.output, verify=args.verify)
    print(info)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark.models import run_benchmark_cli

    run_benchmark_cli(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bidense",
        description="Binary neural networks for dense prediction: train, evaluate, profile, "
        "export and run 1-bit models.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a YAML config or preset")
    p.add_argument("config", help="YAML file or preset name from configs/")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=5")
    p.add_argument("--run-dir", help="run directory (default runs/<name>/<timestamp>)")
    p.add_argument("--resume", help="run directory or checkpoint to resume from")
    p.add_argument("--quiet", action="store_true", help="no per-epoch output")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on its validation split")
    p.add_argument("checkpoint")
    p.add_argument("overrides", nargs="*", help="dotted config overrides (e.g. data.root=...)")
    p.add_argument("--split", default=None, help="split to evaluate (default data.val_split)")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="predict on image files, a folder, a glob or a .txt list")
    p.add_argument("checkpoint")
    p.add_argument("inputs", nargs="+")
    p.add_argument("-o", "--output", default="predictions", help="output folder")
    p.add_argument("--opacity", type=float, default=0.5, help="segmentation overlay opacity")
    p.add_argument("--size", default=None, help="resize input to HxW before predicting")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("summary", help="efficiency report: bits, BOPs, FLOPs, OPs per layer")
    p.add_argument("model")
    p.add_argument("--method", default="bidense")
    p.add_argument("--task", default="seg")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--input", default="1x3x480x480", help="input shape NxCxHxW")
    p.add_argument("--json", action="store_true")
    p.add_argument("--paper-compat", action="store_true", help="the BiDense reference's rules")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("demo", help="the main job: FP vs binary on synthetic data, with a report")
    p.add_argument("-o", "--output", default="reports/demo", help="report folder")
    p.add_argument("--quick", action="store_true", help="a tiny run (seconds) to check set-up")
    p.add_argument("--epochs", type=int, default=None, help="override the epoch budget")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="write a bit-packed .bdn file for the CPU runtime")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--verify", action="store_true", help="check runtime == PyTorch")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("benchmark", help="latency of packed binary layers/models vs PyTorch")
    p.add_argument("--what", choices=["layers", "models", "all"], default="layers")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", default=None, help="write results to this JSON file")
    p.set_defaults(func=cmd_benchmark)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [UserError, FileNotFoundError]
    from .engine.checkpoint import CheckpointError
    from .engine.config import ConfigError

    errors += [ConfigError, CheckpointError]
    try:
        from .data import DatasetError

        errors.append(DatasetError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # overrides may also come after options: `bidense train cfg --resume d train.epochs=3`
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("bidense: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug or not isinstance(exc, _user_errors() + (ValueError,)):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"bidense: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
