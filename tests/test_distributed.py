"""Data-parallel training (`pixelscene.train.distributed`): every trainer's rank shards put
together are the single process's batch, and `pixelscene train` under `mlx.launch` on two
ranks ends with identical weights on both that match one process with the same global batch."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import yaml

from pixelscene.cli import main
from pixelscene.data.captioned_codes import captioned_codes
from pixelscene.data.datasets import CaptionDataset, ImageDataset, batch_iterator
from pixelscene.data.token_cache import ensure_token_cache
from pixelscene.errors import PixelsceneError
from pixelscene.testing import make_random_model_dir, micro_config, micro_tokenizer_run
from pixelscene.train.decoder import CodeImageData
from pixelscene.train.distributed import WHOLE, Shard, any_rank, init
from pixelscene.train.imagetok import CropPool, loss_pixels
from pixelscene.train.transformer import TransformerTrainer
from pixelscene.train.vqgan import random_crops
from pixelscene.transformer.tokenizer import Tokenizer

HALVES = [Shard(0, 2), Shard(1, 2)]
LAUNCH = Path(sys.executable).with_name("mlx.launch")
BUDGET = ["--max-minutes", "1e-6"]  # spent before the first step


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    assert main(["synth", str(out), "--count", "8", "--workers", "1"]) == 0
    return out


def test_a_batch_splits_evenly_or_not_at_all():
    assert [s.part(6) for s in HALVES] == [slice(0, 3), slice(3, 6)]
    assert WHOLE.part(5) == slice(0, 5)
    with pytest.raises(PixelsceneError, match="batch size 5 does not split over 2 ranks"):
        Shard(1, 2).part(5)


def test_a_single_process_is_the_group_of_one():
    group = init()
    assert (group.rank(), group.size()) == (0, 1)
    assert any_rank(True, group) and not any_rank(False, group)


def test_tokenizer_crops_and_loss_pixels_of_the_ranks_are_the_whole_batch(data):
    pool = CropPool([data / "images"], [1.0], [4, 4])
    whole = pool.batch(4, 16, np.random.default_rng(7))[0]
    halves = [pool.batch(4, 16, np.random.default_rng(7), s)[0] for s in HALVES]
    np.testing.assert_array_equal(np.concatenate(halves), whole)
    pixels = loss_pixels(np.random.default_rng(3), 4, 256, 0.25)
    assert len(pixels) == 4 * 64 and len(np.unique(pixels // 256)) == 4  # 64 from each crop
    parts = [loss_pixels(np.random.default_rng(3), 2, 256, 0.25, s) for s in HALVES]
    np.testing.assert_array_equal(np.concatenate([parts[0], parts[1] + 2 * 256]), pixels)


def test_vqgan_batches_and_crops_of_the_ranks_are_the_whole_batch(data):
    ds = ImageDataset(data / "images")
    whole = next(batch_iterator(ds, 4, seed=3, start_batch=1))
    halves = [next(batch_iterator(ds, 4, seed=3, start_batch=1, part=s.part(4))) for s in HALVES]
    np.testing.assert_array_equal(np.concatenate(halves), whole)
    crops = random_crops(whole, 32, [4, 4], np.random.default_rng(5))
    parts = [
        random_crops(h, 32, [4, 4], np.random.default_rng(5), s)
        for h, s in zip(halves, HALVES, strict=True)
    ]
    np.testing.assert_array_equal(np.concatenate(parts), crops)


def test_decoder_and_transformer_batches_of_the_ranks_are_the_whole_batch(data, tmp_path):
    model = make_random_model_dir(tmp_path / "model")
    pairs = CodeImageData(model, data)
    whole = pairs.batch(3, 4, seed=1)
    halves = [pairs.batch(3, 4, seed=1, shard=s) for s in HALVES]
    for i in (0, 1):  # codes, images
        np.testing.assert_array_equal(np.concatenate([h[i] for h in halves]), whole[i])

    cfg = micro_config()
    cfg.train_transformer.batch_size = 4
    dataset = CaptionDataset(data)
    tok = Tokenizer.build([c for _, c in dataset.pairs], 64, cfg.transformer.max_text_len)
    train = captioned_codes(ensure_token_cache(model, data), dataset, tok, cfg.transformer, False)
    train.sprites = np.random.default_rng(0).random(train.codes.shape)  # weighs rows unevenly
    trainer = TransformerTrainer(cfg, tmp_path / "run", 0, tok, train)
    trainer.step = 5
    whole = trainer.batch()
    halves = []
    for shard in HALVES:
        trainer.shard = shard
        halves.append(trainer.batch())
    for i in range(4):  # codes, caption ids, caption masks, loss weights (B, S)
        np.testing.assert_array_equal(np.concatenate([h[i] for h in halves]), whole[i])


def free_port_pair() -> int:
    """A port p with p and p + 1 free: the ring backend's two ranks listen on them."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports")


# `pixelscene train ...` as the console script runs it, with every rank's final weights
# dumped beside the run (rank 0 alone writes the run's own files).
RANK_SCRIPT = """
import sys
import mlx.core as mx
from mlx.utils import tree_flatten
from pixelscene.cli import main
from pixelscene.train import loop

run = loop.run

def run_and_dump(trainer, *args, **kwargs):
    result = run(trainer, *args, **kwargs)
    weights = dict(tree_flatten(trainer.model.parameters()))
    mx.save_safetensors(f"{sys.argv[1]}/rank{trainer.shard.rank}.safetensors", weights)
    return result

loop.run = run_and_dump
sys.exit(main(sys.argv[2:]))
"""


def two_ranks(script: Path, dump: Path, args: list[str], hostfile: Path | None = None) -> dict:
    """Run `pixelscene ARGS` on 2 local ranks, given by `-n 2` or a hostfile (each rank dumps
    its final weights in `dump`); returns the one report (rank 0's)."""
    hosts = ["--hostfile", str(hostfile)] if hostfile else ["-n", "2", "--backend", "ring"]
    launch = [str(LAUNCH), *hosts, "-p", str(free_port_pair())]
    launch += ["--python", sys.executable, "--", str(script), str(dump)]
    done = subprocess.run([*launch, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1, done.stdout  # rank 0 reports for both
    return reports[0]


@pytest.mark.skipif(
    not (LAUNCH.exists() and mx.distributed.is_available()),
    reason="MLX was built without a distributed backend (no ring), or mlx.launch is missing",
)
def test_two_ranks_match_one_process_with_the_same_global_batch(data, tmp_path):
    config = tmp_path / "micro.yaml"
    config.write_text(yaml.safe_dump(micro_tokenizer_run(batch_size=4, steps=4).to_dict()))
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    one, two = tmp_path / "one", tmp_path / "two"
    two.mkdir()
    args = ["train", "tokenizer", "--config", str(config), "--data", str(data / "images")]
    args += ["--no-progress", "--out"]
    assert two_ranks(script, two, [*args, str(two)])["step"] == 4
    # both ranks resume from the checkpoint (ranks from a hostfile, as on a farm); then rank
    # 0's spent time budget stops both
    hostfile = tmp_path / "hosts.json"
    local = {"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}
    hostfile.write_text(json.dumps({"backend": "ring", "hosts": [local, local]}))
    resumed = two_ranks(script, two, [*args, str(two), "--resume", "--steps", "6"], hostfile)
    assert resumed["step"] == 6
    stopped = two_ranks(script, two, [*args, str(two), "--resume", "--steps", "8"] + BUDGET)
    assert stopped["step"] == 6 and stopped["budget_reached"]
    assert main([*args, str(one)]) == 0
    assert main([*args, str(one), "--resume", "--steps", "6"]) == 0

    ranks = [mx.load(str(two / f"rank{r}.safetensors")) for r in (0, 1)]
    saved = mx.load(str(two / "checkpoint" / "tokenizer.safetensors"))
    alone = mx.load(str(one / "checkpoint" / "tokenizer.safetensors"))
    assert ranks[0].keys() == ranks[1].keys() == saved.keys() == alone.keys()
    for name, value in ranks[0].items():
        assert mx.array_equal(value, ranks[1][name]).item(), name
        assert mx.array_equal(value, saved[name]).item(), name
        np.testing.assert_allclose(np.array(value), np.array(alone[name]), atol=1e-4, err_msg=name)
    logs = [
        [json.loads(r) for r in (d / "train.jsonl").read_text().splitlines()] for d in (two, one)
    ]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(*logs, strict=True):  # each rank's loss, averaged: the whole batch's
        assert a["ce"] == pytest.approx(b["ce"], rel=1e-4)
