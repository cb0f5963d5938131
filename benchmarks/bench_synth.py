"""Images per second of `pixelscene synth` (rendering + PNG writing), one core and 2 workers;
`--source patterns` for the pattern images, whose rendering alone is timed as well."""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from pixelscene.data.patterns import render_pattern
from pixelscene.data.synth import SOURCES, write_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--source", choices=SOURCES, default="scenes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        write_dataset(d, 4, seed=0, source=args.source)  # warm up imports and caches
    if args.source == "patterns":
        cpu = time.process_time()
        for i in range(args.count):
            render_pattern(np.random.default_rng([1, i]))
        print(f"render_pattern: {args.count / (time.process_time() - cpu):.1f} images/s per core")
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            wall, cpu = time.perf_counter(), time.process_time()
            write_dataset(d, args.count, seed=1, workers=workers, source=args.source)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        line = f"workers={workers}: {args.count / wall:.1f} images/s wall"
        if workers == 1:
            line += f", {args.count / cpu:.1f} images/s per core (CPU time)"
        print(line)


if __name__ == "__main__":
    main()
