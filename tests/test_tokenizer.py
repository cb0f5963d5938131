import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from pixelscene.errors import ModelLoadError
from pixelscene.transformer.tokenizer import PAD_ID, Tokenizer, split_words

CAPTIONS = [
    "A castle on the hills at sunset.",
    "a lighthouse on the coast at night, with rain",
    "pine trees near a lake at dawn",
    "a castle in the desert at night",
]


def test_split_words_lowercases_and_splits_punctuation():
    assert split_words("A Castle, at NIGHT!") == ["a", "castle", ",", "at", "night", "!"]


def test_vocabulary_is_by_frequency_then_alphabetical():
    tok = Tokenizer.build(CAPTIONS, vocab_size=64, max_length=12, num_buckets=4)
    assert tok.words[:6] == ["a", "at", "the", "castle", "night", "on"]
    counts = {w: sum(split_words(c).count(w) for c in CAPTIONS) for w in tok.words}
    keys = [(-counts[w], w) for w in tok.words]
    assert keys == sorted(keys)
    assert all(tok.word_id(w) >= 1 + tok.num_buckets for w in tok.words)


def test_unknown_words_use_stable_crc32_buckets():
    tok = Tokenizer.build(CAPTIONS, vocab_size=64, max_length=12, num_buckets=4)
    for word in ("volcano", "spaceship", "ü-bahn"):
        assert tok.word_id(word) == 1 + zlib.crc32(word.encode()) % 4
        assert 1 <= tok.word_id(word) <= 4


def test_encode_batch_pads_truncates_and_masks():
    tok = Tokenizer.build(CAPTIONS, vocab_size=64, max_length=5)
    ids, mask = tok.encode_batch(["a castle", "", "a castle on the hills at sunset"])
    assert ids.dtype == np.int32 and mask.dtype == np.bool_ and ids.shape == (3, 5)
    assert mask[0].tolist() == [True, True, False, False, False]
    assert not mask[1].any() and (ids[1] == PAD_ID).all()  # empty caption: unconditional
    assert mask[2].all()
    assert (ids[mask] != PAD_ID).all() and (ids[~mask] == PAD_ID).all()


def test_vocab_size_bounds_ids():
    tok = Tokenizer.build([f"w{i}" for i in range(100)], vocab_size=20, max_length=4, num_buckets=3)
    assert len(tok.words) == 16
    ids, _ = tok.encode_batch([f"w{i} w{i + 1}" for i in range(99)])
    assert ids.max() < 20


def test_save_load_round_trip(tmp_path):
    tok = Tokenizer.build(CAPTIONS, vocab_size=64, max_length=12)
    tok.save(tmp_path / "tokenizer.json")
    again = Tokenizer.load(tmp_path / "tokenizer.json")
    a = tok.encode_batch(CAPTIONS + ["unknown zebra"])
    b = again.encode_batch(CAPTIONS + ["unknown zebra"])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_load_rejects_bad_files(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ModelLoadError):
        Tokenizer.load(tmp_path / "t.json")
    with pytest.raises(ModelLoadError):
        Tokenizer.load(tmp_path / "missing.json")


def test_ids_identical_across_processes_with_different_hash_seeds():
    script = (
        "import json,sys\n"
        "from pixelscene.transformer.tokenizer import Tokenizer\n"
        f"caps = {CAPTIONS!r}\n"
        "tok = Tokenizer.build(caps, vocab_size=40, max_length=10, num_buckets=8)\n"
        "ids, _ = tok.encode_batch(caps + ['zebra volcano spaceship', 'the moon over ruins'])\n"
        "print(json.dumps(ids.tolist()))\n"
    )
    outs = []
    for seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        run = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        outs.append(json.loads(run.stdout))
    assert outs[0] == outs[1]
    assert any(v != 0 for row in outs[0] for v in row)
