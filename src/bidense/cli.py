"""``bidense`` command line: train | eval | predict | summary | demo | export | benchmark |
datasets | serve.

Each sub-command is a thin wrapper over a library function; errors the user can fix are printed
as one line ``bidense: error: ...`` with exit code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .tasks import TASKS


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
    if result["rank"] == 0:  # under torchrun, one line for the run, not one per process
        print(f"run directory: {result['run_dir']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .engine.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.overrides, split=args.split,
                                  confusion=args.confusion)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        from .metrics.segmentation import format_per_class

        for key, value in metrics.items():
            if isinstance(value, float):
                print(f"{key:>12}: {value:.4f}")
            elif not isinstance(value, list):
                print(f"{key:>12}: {value}")
        if "per_class" in metrics:
            print("\n" + format_per_class(metrics["per_class"]))
        if args.confusion:
            print(f"confusion matrix: {args.confusion}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .engine.predict import predict_files

    written = predict_files(
        args.checkpoint, args.inputs, args.output, opacity=args.opacity, size=args.size,
        nonfinite=args.nonfinite,
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


#: the example input's (H, W) when a checkpoint's config names no training size
def parse_export_shape(text: str) -> tuple[int, int, int, int]:
    """``--input-shape``: ``NxCxHxW``, or ``HxW`` for one RGB image."""
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) not in (2, 4) or min(dims) < 1:
        raise UserError(f"--input-shape '{text}' must be NxCxHxW or HxW positive sizes "
                        "(e.g. 1x3x64x64 or 64x64)")
    return dims if len(dims) == 4 else (1, 3, *dims)  # type: ignore[return-value]


#: relative max error above which ``export --format onnx --verify`` fails (docs/onnx.md)
ONNX_VERIFY_TOLERANCE = 1e-4


def cmd_export(args: argparse.Namespace) -> int:
    """Rebuild the checkpoint's model and export it; ``--verify`` compares runtime and PyTorch.

    The example input (a seeded normal sample) has the size the model was trained at
    (:func:`bidense.engine.trained_size`) unless ``--input-shape`` says otherwise; the shape is
    printed. With ``--verify`` a report that is not ok (:func:`bidense.export.verify`) exits 2
    with one line of the figures; the file stays written. ``--format onnx`` writes the float
    graph instead (:func:`bidense.export.export_onnx`); its ``--verify`` runs onnxruntime and
    fails above :data:`ONNX_VERIFY_TOLERANCE`.
    """
    import torch

    from .engine import load_model, trained_size
    from .export import export, export_onnx, verify, verify_onnx

    shape = parse_export_shape(args.input_shape) if args.input_shape else None
    folder = Path(args.output).parent
    if not folder.is_dir():  # before the model is loaded and traced, not after
        raise UserError(f"{args.output}: cannot write (no folder {folder})")
    model, cfg, _ = load_model(args.checkpoint)
    if shape is None:
        (h, w), source = trained_size(cfg)
        shape = (1, 3, h, w)
    else:
        source = "--input-shape"
    print(f"input shape: {'x'.join(map(str, shape))} (from {source})")
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    if args.format == "onnx":
        print(export_onnx(model, args.output, example))
        if args.verify:
            figures = verify_onnx(model, args.output, example)
            line = ", ".join(f"{k} {v:.3g}" for k, v in figures.items()
                             if isinstance(v, float))
            if not figures["max_rel_error"] <= ONNX_VERIFY_TOLERANCE:
                raise UserError(f"{args.output}: onnxruntime differs from PyTorch ({line}; "
                                f"tolerance {ONNX_VERIFY_TOLERANCE:g})")
            print(f"verify (onnxruntime vs PyTorch): {line}")
        return 0
    info = export(model, args.output, example,
                  metadata={"checkpoint": Path(args.checkpoint).name})
    report = verify(model, args.output, example) if args.verify else None
    if report is not None:
        info.max_rel_error = report.max_rel_error
    print(info)
    if report is not None:
        if not report.ok:
            raise UserError(f"{args.output}: {report}")
        print(report)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import run_benchmark_cli

    folder = Path(args.json).parent if args.json else None
    if folder is not None and not folder.is_dir():  # before minutes of timing, not after
        raise UserError(f"{args.json}: cannot write (no folder {folder})")
    run_benchmark_cli(args)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the browser demo of a checkpoint or ``.bdn`` until Ctrl+C."""
    try:
        from .serve import serve
    except ModuleNotFoundError as exc:
        raise UserError(f"bidense serve needs {exc.name}: pip install 'bidense[serve]'") from None

    serve(args.model, host=args.host, port=args.port, threads=args.threads,
          repeats=args.repeats)
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    """``datasets list`` prints the supported layouts; ``datasets check`` reads every sample of a
    split and prints the report, exiting 1 when it names any problem."""
    from .data import check_dataset, dataset_layouts
    from .data.check import parse_options

    if args.action == "list":
        layouts = dataset_layouts()
        if args.json:
            print(json.dumps([layout.to_dict() for layout in layouts], indent=2))
        else:
            print("\n".join(layout.format() for layout in layouts))
        return 0
    report = check_dataset(args.name, args.root, args.split, task=args.task,
                           num_classes=args.num_classes, progress=not args.no_progress,
                           **parse_options(args.option))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.ok else 1


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
    p.add_argument("--confusion", default=None, metavar="PATH.png",
                   help="segmentation: write the row-normalised confusion matrix picture")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="predict on image files, a folder, a glob or a .txt list")
    p.add_argument("checkpoint")
    p.add_argument("inputs", nargs="+")
    p.add_argument("-o", "--output", default="predictions", help="output folder")
    p.add_argument("--opacity", type=float, default=0.5, help="segmentation overlay opacity")
    p.add_argument("--size", default=None, help="resize input to HxW before predicting")
    p.add_argument("--nonfinite", choices=["refuse", "mask"], default="refuse",
                   help="NaN / inf pixels of float images: refuse (default) or replace by 0")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("summary", help="efficiency report: bits, BOPs, FLOPs, OPs per layer")
    p.add_argument("model")
    p.add_argument("--method", default="bidense")
    p.add_argument("--task", default="seg", help=f"one of {', '.join(TASKS)}")
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

    p = sub.add_parser("export", help="write a bit-packed .bdn file for the CPU runtime (or ONNX)")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--format", choices=["bdn", "onnx"], default="bdn",
                   help="bdn: packed file for bidense.runtime (fast); onnx: the float graph for "
                   "any ONNX runtime (no speed-up)")
    p.add_argument("--verify", action="store_true",
                   help="compare the runtime with PyTorch on realistic inputs; exit 2 when the "
                   "report is not ok")
    p.add_argument("--input-shape", default=None, metavar="NxCxHxW|HxW",
                   help="example input shape (default: the size the model was trained at)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("benchmark", help="latency of packed binary layers/models vs PyTorch and "
                       "onnxruntime, native and limited to AVX2")
    p.add_argument("--what", choices=["layers", "models", "all"], default="layers")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", default=None, help="write results to this JSON file")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("serve", help="a local web page: upload an image, see the prediction and "
                       "the runtime's latency")
    p.add_argument("model", metavar="CHECKPOINT_OR_BDN", help="a .pt checkpoint or a .bdn file")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine)")
    p.add_argument("--threads", type=int, default=None, help="runtime threads (default: all)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per image (median)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("datasets", help="list the dataset layouts or check a dataset folder")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("list", help="registered datasets: tasks, on-disk layout, options")
    q.add_argument("--json", action="store_true")
    q = actions.add_parser("check", help="read every sample once; report sizes, statistics and "
                           "every bad file (exit 1 if any)")
    q.add_argument("name", help="registry name, see `bidense datasets list`")
    q.add_argument("root", help="dataset folder")
    q.add_argument("--split", default="train")
    q.add_argument("--task", default=None, help="for datasets serving several tasks")
    q.add_argument("--num-classes", type=int, default=None)
    q.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a dataset option (as in data.kwargs), repeatable; value read as YAML")
    q.add_argument("--json", action="store_true")
    q.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_datasets)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """What ``main`` reports in one line: mistakes in the input (ValueError and the project's
    errors), the system refusing a file (OSError: unwritable folder, disk full, ...) and a
    diverged training run (FloatingPointError: the loss became NaN or inf)."""
    from .engine.checkpoint import CheckpointError  # ConfigError, DatasetError: ValueErrors

    return (UserError, ValueError, OSError, FloatingPointError, CheckpointError)


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
        if args.debug or not isinstance(exc, _user_errors()):
            raise
        print(f"bidense: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: Exception) -> str:
    """``exc`` as one line; an OSError from the system as ``PATH: reason``."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
