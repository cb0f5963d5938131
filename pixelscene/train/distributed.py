"""Data-parallel training over MLX's distributed layer (`mx.distributed`).

`mlx.launch -n N ... pixelscene train ...` starts N copies of one run (one per Mac, or
several on one machine over loopback); a plain `pixelscene train ...` is the group of one
and runs the same code. The rule every trainer keeps:

- every rank builds the same model from the same seed, and `start` gives them all rank 0's
  weights and optimizer states (and refuses ranks that resumed at different steps);
- every rank draws the same global batch of the config's `batch_size` from the same
  (seed, step) generator, crop positions and loss pixels included, and keeps its own
  `batch_size / N` rows (`Shard.part`), so it loads only its share of the images;
- gradients are averaged over the ranks (`mlx.nn.average_gradients`, an all-reduce sum)
  before each rank takes the same optimizer step, and logged values are averaged (`mean`).

So the config's batch size is the global batch: N ranks train what one process would with
the same config (to float rounding), faster. Random draws inside a model (dropout) repeat
on each rank's rows, so they match a single process in distribution only.

Rank 0 alone writes: checkpoints, logs, evaluations, sample grids and model files. Stop
decisions (a signal, the time budget) go through `any_rank`, so every rank stops at the
same step; a rank that stopped alone would leave the others waiting in an all-reduce.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_map

from pixelscene.errors import PixelsceneError

Group = mx.distributed.Group


def init() -> Group:
    """The global group: the ranks `mlx.launch` started, or this process alone."""
    return mx.distributed.init()


@dataclass(frozen=True)
class Shard:
    """Which rows of a global batch this rank trains on."""

    rank: int = 0
    size: int = 1

    @classmethod
    def of(cls, group: Group) -> Shard:
        return cls(group.rank(), group.size())

    def part(self, n: int) -> slice:
        """This rank's rows of a global batch of n (which must split evenly)."""
        if n % self.size:
            raise PixelsceneError(
                f"batch size {n} does not split over {self.size} ranks: make it a multiple "
                f"of {self.size} (the config's batch size is the global batch)"
            )
        b = n // self.size
        return slice(self.rank * b, (self.rank + 1) * b)


WHOLE = Shard()  # a single process's: the whole batch


def mean(x: mx.array, group: Group) -> mx.array:
    """x averaged over the ranks (inside a compiled step too)."""
    return x if group.size() == 1 else mx.distributed.all_sum(x, group=group) / group.size()


def total(x: mx.array, group: Group) -> mx.array:
    """x summed over the ranks."""
    return x if group.size() == 1 else mx.distributed.all_sum(x, group=group)


def gather(x: mx.array, group: Group) -> mx.array:
    """Every rank's x concatenated in rank order (the global batch's rows, in order)."""
    return x if group.size() == 1 else mx.distributed.all_gather(x, group=group)


def barrier(group: Group) -> None:
    """Every rank waits here until all have come."""
    any_rank(False, group)


def any_rank(flag: bool, group: Group) -> bool:
    """True on every rank when it is true on any; pass `rank == 0 and ...` to have rank 0
    alone decide (an all-reduce: every rank must call it at the same point)."""
    if group.size() == 1:
        return bool(flag)
    return mx.distributed.all_sum(mx.array(int(bool(flag))), group=group).item() > 0


@contextmanager
def main_first(group: Group) -> Iterator[None]:
    """Rank 0 runs the block before the others (it builds the caches they then read)."""
    if group.rank() > 0:
        barrier(group)
    try:
        yield
    finally:
        if group.rank() == 0:
            barrier(group)


def start(
    modules: dict[str, nn.Module], optimizers: dict[str, Any], step: int, group: Group
) -> None:
    """Before the first step: every rank must be at the same step (a resumed run reads the
    checkpoint on every machine), and takes rank 0's weights and optimizer states."""
    if group.size() == 1:
        return
    steps = np.array(mx.distributed.all_gather(mx.array([step]), group=group)).tolist()
    if len(set(steps)) > 1:
        raise PixelsceneError(
            f"the ranks resumed at steps {steps}: every machine needs the same checkpoint "
            "in --out (a shared folder, or a copy of rank 0's)"
        )
    first = group.rank() == 0
    for module in modules.values():
        module.update(_from_rank0(module.parameters(), first, group))
    for opt in optimizers.values():
        # in place: compiled steps hold the state's containers
        _assign(opt.state, _from_rank0(opt.state, first, group))
    mx.eval([m.parameters() for m in modules.values()], [o.state for o in optimizers.values()])


def _from_rank0(tree: Any, first: bool, group: Group) -> Any:
    return tree_map(
        lambda x: mx.distributed.all_sum(x if first else mx.zeros_like(x), group=group), tree
    )


def _assign(tree: Any, new: Any) -> None:
    """Copy the arrays of `new` into the same places of `tree` (dicts and lists, in place)."""
    keys = tree.keys() if isinstance(tree, dict) else range(len(tree))
    for k in keys:
        if isinstance(tree[k], mx.array):
            tree[k] = new[k]
        else:
            _assign(tree[k], new[k])
