"""Data-parallel training on this machine, side by side: `pixelscene train tokenizer` (the
`pixel` preset, global batch 8 crops of 64x64) as one process and as 2 ranks under
`mlx.launch -n 2 --backend ring` (loopback), the same global batch and steps; and the cost
of one gradient exchange (an all-reduce of the model's gradients between the 2 ranks).

The 2 ranks run twice: under `mlx.launch` (whose output-relaying threads poll without
sleeping, taking CPU from the ranks on a small machine) and started directly, with the
hostfile and rank variables `mlx.launch` gives them. Prints the median seconds per step
(evaluation excluded), crops/s and the speedup over one process with all cores, with the
load average before and after: other work on the machine changes every figure. See
docs/distributed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

LAUNCH = Path(sys.executable).with_name("mlx.launch")


def free_port_pair() -> int:
    """A port p with p and p + 1 free (the two ranks listen on them)."""
    while True:
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


def launch(ranks: int, threads: int) -> list[str]:
    """The command prefix that runs `-m pixelscene ...` on `ranks` local ranks."""
    if ranks == 1:
        return [sys.executable]
    return [
        str(LAUNCH), "-n", str(ranks), "--backend", "ring", "-p", str(free_port_pair()),
        "--env", f"OPENBLAS_NUM_THREADS={threads}", "--python", sys.executable, "--",
    ]  # fmt: skip


def direct(
    command: list[str], env: dict[str, str], ranks: int, hosts: Path
) -> list[subprocess.Popen]:
    """`ranks` local ranks of `python COMMAND` started without mlx.launch, as it starts them:
    a ring hostfile (written at `hosts`) of one address per rank, and each rank's number."""
    port = free_port_pair()
    hosts.write_text(json.dumps([[f"127.0.0.1:{port + r}"] for r in range(ranks)]))
    return [
        subprocess.Popen(
            [sys.executable, *command],
            env=dict(env, MLX_HOSTFILE=str(hosts), MLX_RANK=str(r)),
            stdout=subprocess.PIPE if r == 0 else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for r in range(ranks)
    ]


def train(ranks: int, threads: int, config: Path, data: Path, steps: int, launcher: bool) -> dict:
    """One run's report (rank 0's JSON line) and its wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["-m", "pixelscene", "train", "tokenizer", "--config", str(config)]
        cmd += ["--data", str(data), "--out", f"{tmp}/out", "--steps", str(steps)]
        cmd += ["--no-progress"]
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
        t0 = time.perf_counter()
        if launcher or ranks == 1:
            done = subprocess.run([*launch(ranks, threads), *cmd], capture_output=True, env=env)
            ok, stdout = done.returncode == 0, done.stdout.decode()
        else:
            procs = direct(cmd, env, ranks, Path(tmp) / "hosts.json")
            stdout = procs[0].communicate()[0]
            ok = all(p.wait() == 0 for p in procs)
        wall = time.perf_counter() - t0
    if not ok:
        sys.exit(f"{ranks} rank(s) of pixelscene {' '.join(cmd)} failed")
    report = json.loads([r for r in stdout.splitlines() if r.startswith("{")][-1])
    return {**report, "wall_s": wall}


def exchange_worker(values: int, repeats: int) -> None:
    """Under mlx.launch: time an all-reduce of `values` float32 (rank 0 prints it)."""
    import mlx.core as mx
    import numpy as np

    group = mx.distributed.init()
    x = mx.ones((values,))
    mx.eval(mx.distributed.all_sum(x, group=group))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mx.eval(mx.distributed.all_sum(x, group=group))
        times.append(time.perf_counter() - t0)
    if group.rank() == 0:
        print(json.dumps({"seconds": float(np.median(times))}))


def exchange(values: int) -> float:
    cmd = [*launch(2, 1), __file__, "--exchange-worker", str(values)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40, help="steps per run (default 40)")
    parser.add_argument("--data", help="image folder (default: 64 fresh synthetic scenes)")
    parser.add_argument("--exchange-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.exchange_worker:
        exchange_worker(args.exchange_worker, repeats=10)
        return

    from mlx.utils import tree_flatten

    from pixelscene.config import load_config
    from pixelscene.imagetok.model import ImageTokenizer

    cfg = load_config("pixel")
    cfg.train_tokenizer.eval_images = 2  # the one evaluation at the end is not what we time
    cfg.train_tokenizer.checkpoint_every = 10**6
    values = sum(v.size for _, v in tree_flatten(ImageTokenizer(cfg.tokenizer).parameters()))
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "pixel.yaml"
        config.write_text(yaml.safe_dump(cfg.to_dict()))
        data = Path(args.data) if args.data else Path(tmp) / "scenes"
        if not args.data:
            synth = [sys.executable, "-m", "pixelscene", "synth", str(data), "--count", "64"]
            subprocess.run(synth, check=True, capture_output=True)
            data = data / "images"
        batch = cfg.train_tokenizer.batch_size
        print(f"pixel tokenizer, {values / 1e6:.2f} M parameters, global batch {batch} crops")
        print(f"of 64x64, {args.steps} steps per run; load average before: {load()}")
        print(f"{'ranks x threads':<38}{'s/step':>8}{'crops/s':>9}{'speedup':>9}{'wall s':>8}")
        base = None
        runs = [(1, os.cpu_count() or 1, False), (1, 1, False), (2, 1, True), (2, 1, False)]
        for ranks, threads, launcher in runs:
            r = train(ranks, threads, config, data, args.steps, launcher)
            sec = r["seconds_per_step"]
            base = base or sec
            name = f"{ranks} x {threads} OpenBLAS thread(s)"
            name += " mlx.launch" if launcher else " direct" if ranks > 1 else ""
            print(f"{name:<38}{sec:>8.3f}{batch / sec:>9.2f}{base / sec:>9.2f}{r['wall_s']:>8.1f}")
    seconds = exchange(values)
    print(f"gradient exchange: all-reduce of {values * 4 / 1e6:.1f} MB between 2 ranks over")
    print(f"loopback: {seconds * 1000:.0f} ms; load average after: {load()}")


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
