"""`pixelscene bench generate`: model folders of both kinds timed end to end (no figure is
asserted: the machine is shared)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pixelscene import cli, model_io
from pixelscene.commands.bench_generate import PARTS, batch_figures, model_target, timed_steps
from pixelscene.errors import PixelsceneError
from pixelscene.pipeline import PixelScene
from pixelscene.testing import make_random_model_dir, micro_categorical_config, micro_config


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "vqgan": make_random_model_dir(root / "vq", micro_config()),
        "categorical": make_random_model_dir(root / "cat", micro_categorical_config()),
    }


def bench(capsys, *args) -> dict:
    assert cli.main(["bench", "generate", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_both_kinds_have_every_batch_the_best_one_and_where_the_time_goes(folders, capsys):
    names = [str(folders["vqgan"]), str(folders["categorical"])]
    out = bench(capsys, "--model", *names, "--batches", "1,2,3", "--repeats", "3")
    assert list(out["models"]) == names and out["device"]
    models = list(out["models"].values())
    assert [r["image_tokenizer"] for r in models] == ["vqgan", "categorical"]
    assert [r["codes_per_image"] for r in models] == [260, 24 + 260]
    for result in models:
        assert set(result["engines"]) == {"cpu", "mlx"} and result["engine"] in {"cpu", "mlx"}
        headline = {k: v for k, v in result.items() if k in result["engines"][result["engine"]]}
        assert headline == result["engines"][result["engine"]]
        for figures in result["engines"].values():
            per = {b: figures[f"b{b}_s_per_image"] for b in (1, 2, 3)}
            assert min(per.values()) > 0
            assert figures["best_batch"] == min(per, key=per.get)
            assert figures["best_s_per_image"] == per[figures["best_batch"]]
            split = {1, figures["best_batch"]}
            for b in (1, 2, 3):
                assert (f"b{b}_codes_s_per_image" in figures) == (b in split), b
            for b in split:
                parts = [figures[f"b{b}_{k}_s_per_image"] for k in PARTS]
                assert min(parts) > 0
                # the same steps one at a time, per image: about the whole, never several times it
                assert sum(parts) <= 1.5 * per[b] + 0.01, (b, parts, per[b])
        assert result["weights"] == "stored" and result["repeats"] == 3
        assert result["sampler_threads"] >= 1 and result["cpus"] >= 1
        assert len(result["load_average_start"]) == len(result["load_average_end"]) == 3
        assert result["peak_rss_mb"] > 0 and result["load_s"] > 0


@pytest.mark.parametrize("kind", ["vqgan", "categorical"])
def test_the_parts_are_the_steps_generate_takes(folders, kind):
    scene = PixelScene.load(folders[kind], engine="cpu")
    seconds, codes = timed_steps(scene, "a castle at night", 2, seed=5)
    images = scene.generate(["a castle at night"], n=2, seed=5, batch_size=2)
    np.testing.assert_array_equal(codes, np.stack([image.codes for image in images]))
    assert list(seconds) == list(PARTS) and min(seconds.values()) > 0


def test_the_best_batch_has_the_least_time_per_image():
    figures = batch_figures({1: 0.4, 2: 0.6, 4: 0.8, 8: 2.0})
    assert [figures[f"b{b}_s_per_image"] for b in (1, 2, 4, 8)] == [0.4, 0.3, 0.2, 0.25]
    assert figures["best_batch"] == 4 and figures["best_s_per_image"] == 0.2
    assert batch_figures({2: 0.6, 1: 0.3})["best_batch"] == 1  # a tie: the smaller batch


def test_the_bundled_model_by_default_and_random_weights_of_a_config(tmp_path, capsys):
    out = bench(capsys, "--batches", "1", "--repeats", "1", "--engines", "cpu")
    bundled = out["models"]["bundled"]
    assert bundled["image_tokenizer"] == "vqgan" and bundled["weights"] == "stored"
    assert bundled["engine"] == "cpu" and bundled["best_batch"] == 1
    config = tmp_path / "micro.json"
    config.write_text(json.dumps(micro_categorical_config().to_dict()))
    out = bench(capsys, "--model", f"random:{config}", "--batches", "2", "--repeats", "1")
    random = out["models"][f"random:{config}"]
    assert random["image_tokenizer"] == "categorical" and random["weights"].startswith("random")
    assert random["best_batch"] == 2 and random["b2_paint_s_per_image"] > 0


def test_a_model_is_a_folder_or_a_bundled_name():
    assert model_target("tiny") == model_target(None) == model_io.BUNDLED_MODEL_DIR
    with pytest.raises(PixelsceneError, match="missing transformer.safetensors"):
        model_target("pixel-tokenizer")  # bundled, but a tokenizer alone


@pytest.mark.parametrize(
    "args, named",
    [
        (["--model", "no-such-model"], "--model no-such-model: no such model folder"),
        (["--model", "random:no-such-preset"], "--model random:no-such-preset"),
        (["--batches", "1,0"], "--batches"),
        (["--batches", "2,x"], "--batches"),
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--engines", "cpu,gpu"], "--engines takes cpu, mlx, got gpu"),
    ],
)
def test_bad_arguments_exit_with_one_line_naming_them(capsys, args, named):
    try:
        code = cli.main(["bench", "generate", *args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    assert code == 2
    captured = capsys.readouterr()
    assert named in captured.err and "Traceback" not in captured.err
    assert captured.out == ""


def test_every_model_is_checked_before_any_is_timed(folders, capsys):
    code = cli.main(["bench", "generate", "--model", str(folders["vqgan"]), "nowhere/model"])
    assert code == 2 and capsys.readouterr().out == ""
