"""The ``ncap`` command line: ``ncap select`` ranks candidate backbones for a dataset.

``ncap select`` with no arguments runs the built-in example (digits 0-4 ->
5-9, the pool of small backbones, evaluation mode) and prints the ranked table.

Exit status: 0 every candidate ran; 1 some candidates failed (the report says
why); 2 a usage error (bad arguments, data, candidates or weights: nothing was
trained); 130 interrupted (the finished candidates are saved; ``--resume``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..arrays.spec import check_hidden
from .scoring import BETA_PROTOCOLS
from .settings import check_dropout, check_int, check_learning_rate, check_timeout
from .tf_quiet import SHOW_ENV, quiet_tensorflow

EXIT_OK = 0
EXIT_FAILED = 1  # some candidates failed
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


def _epilog() -> str:
    from .example import POOL

    names = ", ".join(f"example:{b.name}" for b in POOL)
    return f"""\
candidates (any mix):
  MobileNetV2, ResNet50, ...   keras.applications (include_top=False, pooling="avg"),
                               RANDOMLY INITIALISED unless --weights imagenet or a file
  path/net.keras, net.h5       a saved Keras backbone without its classifier
  mymodule:build               a function returning a backbone (mymodule.py in the
                               working directory or on sys.path; may take input_shape=)
  example:NAME                 a backbone of the built-in example: {names}
  No candidates and no --data: the whole built-in example pool on digits 0-4 -> 5-9.
  Inputs are adapted to each backbone (resize, grey<->RGB, pixels to 0..255 and
  preprocess_input for keras.applications); every step is printed and recorded.

data:
  an .npz with x_train, y_train, x_val, y_val (x_test, y_test for --truth-epochs), or an
  image folder: either train/, val/ (or validation/) and optional test/, each with one
  sub-folder per class, or just one sub-folder per class (split 60/20/20, stratified).

output (in --out, default ncap-runs/DATE-TIME):
  report.json (fields: docs/REPORT.md), report.csv (the ranking table), plots/*.png,
  candidates/NAME.json (each written when that candidate finishes; --resume reuses them).

exit status: 0 all candidates ran, 1 some failed, 2 usage error, 130 interrupted.

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
        epilog=_epilog(),
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
        help="evaluation mode: train on to epoch N and record the test accuracy (example: 30)",
    )
    g.add_argument(
        "--truth-seeds",
        type=_positive("truth seeds", 1),
        default=1,
        metavar="N",
        help="evaluation mode: fine-tune each candidate with N seeds (--seed, --seed + 1, ...); "
        "methods are judged against the mean truth and the report gives the Spearman rho "
        "between the seeds' truths, the seed-noise ceiling (default 1)",
    )
    g.add_argument(
        "--beta",
        choices=BETA_PROTOCOLS,
        default="step",
        help="per-epoch beta_eff: step (default, free: mean over the epoch's training steps), "
        "epoch (the paper's: a pass over the training set in inference mode after each epoch, "
        "about 1.3x an epoch's cost), both (record both; the report shows both predictors)",
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
    g.add_argument(
        "--seed",
        type=_positive("seed", 0),
        default=0,
        metavar="N",
        help="random seed of fine-tuning: backbone (when randomly initialised) and probe "
        "weights, batch order, dropout; the same seed gives the same records (default 0; "
        "an image folder's split does not change with it)",
    )
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
        help="weights of keras.applications candidates: imagenet (from Keras' cache "
        "~/.keras/models, fetched once if missing) or a weights file; checked before any "
        "training (default: random initialisation, which ranks architectures, not "
        "pre-training)",
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
        help="TensorFlow threads per candidate, in this process or a worker (default 1; fixed, "
        "so that the results do not depend on --workers)",
    )
    r.add_argument(
        "--candidate-timeout",
        type=_checked(_number("candidate timeout"), check_timeout),
        metavar="SECONDS",
        help="stop a candidate still running SECONDS after it started and report it as "
        "timed out; the run goes on (candidates then run in worker processes, also with "
        "--workers 1)",
    )
    r.add_argument(
        "--retries",
        type=_positive("retries", 0),
        default=0,
        metavar="N",
        help="with Dask: run a candidate again (up to N times) when its worker dies while it "
        "runs (default 0: reported as failed); one only queued on that worker always runs again",
    )
    r.add_argument(
        "--resume", action="store_true", help="skip candidates already finished in --out"
    )
    r.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    r.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only the ranking and each method's pick (no header, progress or table)",
    )
    r.add_argument(
        "--tf-log",
        action="store_true",
        help="show TensorFlow's own log lines (hidden when it finds no GPU)",
    )
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

    _working_directory_on_path()
    if args.tf_log:
        os.environ[SHOW_ENV] = "1"
    try:
        quiet_tensorflow()  # before anything imports TensorFlow (see tf_quiet.py)
        from .data import load_image_directory
        from .pipeline import select

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
            candidate_timeout=args.candidate_timeout,
            retries=args.retries,
            beta=args.beta,
            truth_seeds=args.truth_seeds,
            resume=args.resume,
            plots=not args.no_plots,
            progress=not args.quiet,
        )
    except (ValueError, TypeError) as err:
        print(f"ncap select: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:  # one line, not TensorFlow's 60 frames
        print(f"ncap select: {_interrupted(err)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(report.summary() if args.quiet else report.table())
    return EXIT_OK if all(c.ok for c in report.candidates) else EXIT_FAILED


def _interrupted(err: KeyboardInterrupt) -> str:
    """What Ctrl-C left: how many candidates are saved where, and how to go on."""
    from .runner import RunInterrupted

    if isinstance(err, RunInterrupted) and err.out is not None:
        return (
            f"interrupted: {err.saved} of {err.total} candidates saved in {err.out}; "
            f"rerun with --resume --out {err.out} to continue"
        )
    return "interrupted before training began"


def _working_directory_on_path() -> None:
    """Let ``module:function`` candidates import from the working directory, as ``python -m``.

    A console script's ``sys.path`` starts with the script's own folder, not the
    working directory, so ``ncap select mybb:net`` could not import ``mybb.py``.
    """
    cwd = os.getcwd()
    if not any(p in ("", cwd) for p in sys.path):
        sys.path.insert(0, cwd)


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
