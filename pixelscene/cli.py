"""`pixelscene ...`: a thin argparse front end over command modules.

Each leaf command is a module with `add_arguments(parser)` and `run(args) -> int`; modules
keep their top-level imports light so `pixelscene --help` stays fast. The library's own
commands are listed here; packages installed beside it (the REST API, the queue workers)
add theirs as entry points in the `pixelscene.commands` group, each a module that also
has `HELP`, its one-line help.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import os
import sys
from pathlib import Path

from pixelscene.errors import PixelsceneError

# (command path, module, help) of the library's own commands.
COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("synth",), "pixelscene.commands.synth", "render a captioned synthetic pixel-art dataset"),
    (("train", "vqgan"), "pixelscene.commands.train_vqgan", "train the VQGAN"),
    (
        ("train", "tokenizer"),
        "pixelscene.commands.train_tokenizer",
        "train the categorical image tokenizer (crisp 6-bit pixels)",
    ),
    (
        ("train", "decoder"),
        "pixelscene.commands.train_decoder",
        "fine-tune a VQGAN's decoder on whole images (codes unchanged)",
    ),
    (("train", "transformer"), "pixelscene.commands.train_transformer", "train the transformer"),
    (("train", "probe"), "pixelscene.commands.train_probe", "train the attribute probe"),
    (("encode",), "pixelscene.commands.encode", "encode a dataset into a token cache"),
    (("eval", "vqgan"), "pixelscene.commands.eval_vqgan", "measure VQGAN reconstruction"),
    (("eval", "adherence"), "pixelscene.commands.eval_adherence", "measure prompt adherence"),
    (("generate",), "pixelscene.commands.generate", "generate images from a prompt"),
    (
        ("grid",),
        "pixelscene.commands.grid",
        "a labelled sheet of images for a prompt list (the README's grid)",
    ),
    (("decode",), "pixelscene.commands.decode", "decode a saved code grid into a PNG"),
    (("bench", "vqgan"), "pixelscene.commands.bench_vqgan", "benchmark VQGAN speed"),
    (("bench", "sampling"), "pixelscene.commands.bench_sampling", "benchmark the sampler"),
    (
        ("bench", "generate"),
        "pixelscene.commands.bench_generate",
        "benchmark a model end to end: prompt in, painted images out, best batch",
    ),
]
ENTRY_POINT_GROUP = "pixelscene.commands"

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
)
log = logging.getLogger("pixelscene")


def find_openblas() -> str | None:
    """Debian's OpenBLAS, which MLX's CPU wheel runs far faster with than its reference BLAS."""
    if sys.platform != "linux":
        return None
    return next((p for p in OPENBLAS_CANDIDATES if Path(p).exists()), None)


def maybe_reexec_with_openblas(argv: list[str]) -> None:
    """Re-exec once with OpenBLAS preloaded where it is present; a no-op elsewhere."""
    if os.environ.get("PIXELSCENE_NO_OPENBLAS") or os.environ.get("_PIXELSCENE_REEXEC"):
        return
    lib = find_openblas()
    if lib is None or lib in os.environ.get("LD_PRELOAD", ""):
        return
    env = dict(os.environ, _PIXELSCENE_REEXEC="1")
    env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    try:
        os.execve(sys.executable, [sys.executable, "-m", "pixelscene", *argv], env)
    except OSError:
        return


def commands() -> list[tuple[tuple[str, ...], str, str | None]]:
    """The library's commands, then those registered under `ENTRY_POINT_GROUP` (help None:
    the module's `HELP`)."""
    registered = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return [*COMMANDS, *(((ep.name,), ep.module, None) for ep in registered)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pixelscene", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {
        (): parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    }
    for path, module_name, help_text in commands():
        for depth in range(1, len(path)):
            prefix = path[:depth]
            if prefix not in groups:
                sub = groups[path[: depth - 1]].add_parser(prefix[-1], help=f"{prefix[-1]} ...")
                groups[prefix] = sub.add_subparsers(metavar="WHAT", required=True)
        try:
            module, unavailable = importlib.import_module(module_name), None
        except ImportError as e:
            module, unavailable = None, str(e)
        help_text = help_text or getattr(module, "HELP", None)
        leaf = groups[path[:-1]].add_parser(path[-1], help=help_text, description=help_text)
        leaf.set_defaults(_module=module_name)
        if module is None:
            leaf.set_defaults(_unavailable=unavailable)
            continue
        module.add_arguments(leaf)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the console script: programmatic callers are never re-executed
        argv = sys.argv[1:]
        maybe_reexec_with_openblas(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    openblas = [p for p in os.environ.get("LD_PRELOAD", "").split(":") if "openblas" in p]
    if openblas and not os.environ.get("_PIXELSCENE_OPENBLAS_SAID"):
        os.environ["_PIXELSCENE_OPENBLAS_SAID"] = "1"  # child processes inherit it: said once
        log.info("using OpenBLAS for MLX on the CPU (%s)", openblas[0])
    if getattr(args, "_unavailable", None):
        print(f"pixelscene: command unavailable: {args._unavailable}", file=sys.stderr)
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except PixelsceneError as e:
        print(f"pixelscene: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path given on the command line: a folder in the way, no space...
        if args.verbose:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"pixelscene: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pixelscene: interrupted", file=sys.stderr)
        return 130
