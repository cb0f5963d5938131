"""Images per second of `pixelscene synth` (rendering + PNG writing), one core and 2 workers."""

from __future__ import annotations

import argparse
import tempfile
import time

from pixelscene.data.synth import write_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    write_dataset(tempfile.mkdtemp(), 4, seed=0)  # warm up imports and caches
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            wall, cpu = time.perf_counter(), time.process_time()
            write_dataset(d, args.count, seed=1, workers=workers)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        line = f"workers={workers}: {args.count / wall:.1f} images/s wall"
        if workers == 1:
            line += f", {args.count / cpu:.1f} images/s per core (CPU time)"
        print(line)


if __name__ == "__main__":
    main()
