"""The ``ncap`` command line: ``ncap select`` ranks candidate backbones for a dataset.

``ncap select`` with no arguments runs the built-in example (digits 0-4 ->
5-9, eight small backbones, evaluation mode) and prints the ranked table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..arrays.spec import check_hidden
from .settings import check_dropout, check_int, check_learning_rate

EXIT_USAGE = 2
EXIT_FAILED = 1

_EPILOG = """\
candidates:
  keras.applications names (MobileNetV2, ResNet50, ...; built with include_top=False,
  pooling="avg" and --weights), saved Keras backbones (.keras/.h5, without the
  classifier), module:function callables returning a backbone, or example:NAME.
  No candidates and no --data: the built-in example (digits 0-4 -> 5-9).

examples:
  ncap select                                    # built-in example, evaluation mode
  ncap select MobileNetV2 ResNet50 --data flowers/ --weights imagenet --epochs 5
  ncap select a.keras b.keras --data target.npz --truth-epochs 30 --workers 2
  ncap select --out runs/x --resume              # continue an interrupted run
"""


def _checked(parse: Callable[[str], Any], check: Callable[[Any], Any]) -> Callable[[str], Any]:
    """An argparse type: parse the text, then apply the setting's own check (settings.py)."""

    def convert(text: str) -> Any:
        try:
            return check(parse(text))
        except (TypeError, ValueError) as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


def _integer(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {text!r}") from None

    return parse


def _number(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {text!r}") from None

    return parse


def _positive(name: str, lo: int = 1) -> Callable[[str], int]:
    return _checked(_integer(name), lambda v: check_int(v, name, lo))


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ValueError(
            f"hidden must be comma-separated widths like 256,128,64, got {text!r}"
        ) from None


def _size(s: str) -> tuple[int, int]:
    try:
        v = tuple(int(p) for p in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be H or H,W, got {s!r}") from None
    if len(v) == 1:
        v = (v[0], v[0])
    if len(v) != 2 or min(v) < 1:
        raise argparse.ArgumentTypeError(f"image size must be H or H,W, got {s!r}")
    return v  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(prog="ncap", description="Neural capacitance (beta_eff) tools.")
    p.add_argument("--version", action="version", version=f"ncap {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser(
        "select",
        help="rank candidate backbones by predicted fine-tuned accuracy",
        description="Fine-tune each candidate for a few epochs with ncap's probe, predict its "
        "final accuracy from beta_eff, and rank; baselines (last seen, best seen, curve "
        "extrapolation, LogME) are shown beside it.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument(
        "candidates",
        nargs="*",
        metavar="CANDIDATE",
        help="backbones to compare (default: the built-in example pool)",
    )
    s.add_argument(
        "--data",
        metavar="PATH",
        help=".npz (x_train, y_train, x_val, y_val, x_test, y_test) or an image "
        "directory (default: the built-in example)",
    )
    s.add_argument(
        "--image-size",
        type=_size,
        default=(224, 224),
        metavar="H[,W]",
        help="size images of an image directory are loaded at (default 224,224)",
    )
    g = s.add_argument_group("training")
    g.add_argument(
        "--epochs",
        type=_positive("epochs", 2),
        metavar="N",
        help="epochs observed by every predictor (default 5; example: 10)",
    )
    g.add_argument(
        "--truth-epochs",
        type=_positive("truth epochs", 1),
        metavar="N",
        help="evaluation mode: train on to epoch N and record the test accuracy (example: 50)",
    )
    g.add_argument(
        "--final-epoch",
        type=_positive("final epoch", 1),
        metavar="N",
        help="epoch that curve extrapolation reads off (default: --truth-epochs or 50)",
    )
    g.add_argument(
        "-k",
        type=_positive("k", 2),
        default=5,
        metavar="K",
        help="epochs in ncap's fitted window (default 5)",
    )
    g.add_argument(
        "--t0",
        type=_positive("t0", 1),
        metavar="EPOCH",
        help="first epoch (1-based) of the window (default: chosen by BIC)",
    )
    g.add_argument(
        "--batch-size",
        type=_positive("batch size", 1),
        metavar="B",
        help="default 64 (example: 32)",
    )
    g.add_argument(
        "--learning-rate",
        type=_checked(_number("learning rate"), check_learning_rate),
        default=1e-3,
        metavar="LR",
        help="Adam learning rate (default 0.001)",
    )
    g.add_argument("--seed", type=_positive("seed", 0), default=0)
    g.add_argument(
        "--hidden",
        type=_checked(_widths, check_hidden),
        default=(256, 128, 64),
        metavar="W1,W2,W3",
        help="probe widths (default 256,128,64)",
    )
    g.add_argument(
        "--dropout",
        type=_checked(_number("dropout"), check_dropout),
        default=0.4,
        help="probe dropout (default 0.4)",
    )
    g.add_argument(
        "--weights",
        metavar="W",
        help="weights for keras.applications candidates: imagenet or a file "
        "(default: random initialisation)",
    )
    g.add_argument(
        "--no-preprocess",
        action="store_true",
        help="do not apply keras.applications' preprocess_input (it expects pixels in 0..255)",
    )
    r = s.add_argument_group("running")
    r.add_argument(
        "--out",
        metavar="DIR",
        help="run directory (default ncap-runs/DATE-TIME; with --resume: the latest one)",
    )
    r.add_argument(
        "--workers",
        type=_positive("workers", 1),
        default=1,
        metavar="N",
        help="1: run in this process; N > 1: a Dask LocalCluster of N processes",
    )
    r.add_argument(
        "--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://host:8786"
    )
    r.add_argument(
        "--threads",
        type=_positive("threads", 1),
        metavar="N",
        help="TensorFlow threads per Dask worker (default cores / workers)",
    )
    r.add_argument(
        "--resume", action="store_true", help="skip candidates already finished in --out"
    )
    r.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return p


def _latest_run(root: str = "ncap-runs") -> str | None:
    if not os.path.isdir(root):
        return None
    runs = [
        os.path.join(root, d)
        for d in os.listdir(root)
        if os.path.isfile(os.path.join(root, d, "run.json"))
    ]
    return max(runs, key=os.path.getmtime) if runs else None


def _select(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    out = args.out
    if out is None:
        if args.resume:
            out = _latest_run()
            if out is None:
                parser.error("--resume: no earlier run in ncap-runs/; name it with --out DIR")
        else:
            out = os.path.join("ncap-runs", time.strftime("%Y%m%d-%H%M%S"))
    elif args.resume and not os.path.isdir(out):
        parser.error(f"--resume: no run directory {out!r}")
    if args.data is not None and not os.path.exists(args.data):
        parser.error(f"--data: no such file or directory {args.data!r}")
    if args.data is not None and not args.candidates:
        parser.error(
            "name the CANDIDATE backbones to compare on --data "
            "(the built-in pool only fits the built-in example)"
        )

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .data import load_image_directory
    from .pipeline import select

    try:
        data = args.data
        if data is not None and os.path.isdir(data):
            data = load_image_directory(data, image_size=args.image_size)
        report = select(
            args.candidates or None,
            data,
            epochs=args.epochs,
            truth_epochs=args.truth_epochs,
            final_epoch=args.final_epoch,
            k=args.k,
            t0=None if args.t0 is None else args.t0 - 1,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            hidden=args.hidden,
            dropout=args.dropout,
            weights=args.weights,
            preprocess=not args.no_preprocess,
            out=out,
            workers=args.workers,
            scheduler=args.scheduler,
            threads=args.threads,
            resume=args.resume,
            plots=not args.no_plots,
            progress=not args.quiet,
        )
    except (ValueError, TypeError) as err:
        print(f"ncap select: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(report.table())
    ok = sum(c.ok for c in report.candidates)
    return 0 if ok else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ncap`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        print("\nncap: error: choose a command (ncap select)", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "select":
        return _select(args, parser)
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
