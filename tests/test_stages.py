"""Training stages as typed requests: `run_stage` runs the stage's trainer, and each
`pixelscene train <stage>` turns its flags into the request it runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pixelscene import cli
from pixelscene.testing import micro_vqgan_run
from pixelscene.train import stages
from pixelscene.train.loop import TrainResult
from pixelscene.train.stages import (
    DecoderRequest,
    ProbeRequest,
    TokenizerRequest,
    TransformerRequest,
    VqganRequest,
    run_stage,
)
from pixelscene.train.vqgan import train_vqgan


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four 320x200 images of flat-colour 16x16 blocks."""
    folder = tmp_path_factory.mktemp("data") / "images"
    folder.mkdir()
    for i in range(4):
        blocks = np.random.default_rng(i).integers(0, 4, size=(13, 20, 3)) * 80
        image = np.repeat(np.repeat(blocks, 16, 0), 16, 1)[:200].astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i:06d}.png")
    return folder


def train_losses(out):
    return [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]


def test_run_stage_trains_what_the_trainer_trains(data, tmp_path):
    request = VqganRequest(config=micro_vqgan_run(steps=5), data_dir=data, out_dir=tmp_path / "a")
    result = run_stage(request, progress=False)
    direct = train_vqgan(micro_vqgan_run(steps=5), data, tmp_path / "b", progress_bar=False)
    assert (result.step, result.interrupted) == (5, False) == (direct.step, direct.interrupted)
    a, b = train_losses(tmp_path / "a"), train_losses(tmp_path / "b")
    assert [r["step"] for r in a] == [1, 2, 3, 4, 5]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for key in ra.keys() - {"step", "img_per_s"}:
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-7), (ra["step"], key)
    assert "d" in a[-1]  # the GAN phase ran too
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        p.name for p in (tmp_path / "b").iterdir()
    )
    # a resumed run takes its config from the checkpoint: the request's is never loaded
    again = VqganRequest(
        config="no-such-preset", data_dir=data, out_dir=tmp_path / "a", resume=True, steps=7
    )
    assert run_stage(again, progress=False).step == 7


@pytest.mark.parametrize(
    "request_, module, trainer, expected",
    [
        (
            TokenizerRequest(data_dirs=["a", "b"], out_dir="o", data_weights=[1.0, 2.0]),
            "imagetok",
            "train_tokenizer",
            {"data_dirs": ["a", "b"], "out_dir": "o", "data_weights": [1.0, 2.0]},
        ),
        (
            DecoderRequest(data_dir="d", out_dir="o", model_dir="m", eval_dir="e", gan_weight=0.5),
            "decoder",
            "finetune_decoder",
            {"model_dir": "m", "data_dir": "d", "out_dir": "o", "eval_dir": "e"},
        ),
        (
            TransformerRequest(data_dir="d", vqgan_dir="v", out_dir="o", init_from="m", steps=9),
            "transformer",
            "train_transformer",
            {"config": "tiny", "vqgan_dir": "v", "init_from": "m", "steps": 9, "progress": False},
        ),
        (
            ProbeRequest(data_dir="d", eval_dir="e", out_dir="o", channels=(4, 8, 8), seed=2),
            "probe",
            "train_and_save",
            {"data_dir": "d", "eval_dir": "e", "channels": [4, 8, 8], "seed": 2},
        ),
    ],
)
def test_run_stage_calls_the_stage_trainer(monkeypatch, request_, module, trainer, expected):
    """Each request reaches its trainer as arguments the trainer takes (bound to its real
    signature), progress included."""
    import importlib
    import inspect

    target = importlib.import_module(f"pixelscene.train.{module}")
    signature = inspect.signature(getattr(target, trainer))
    calls = []

    def fake(*args, **kwargs):
        calls.append(signature.bind(*args, **kwargs).arguments)
        return TrainResult(1, False, 0.1, None)

    monkeypatch.setattr(target, trainer, fake)
    assert run_stage(request_, progress=False).step == 1
    (arguments,) = calls
    assert {k: arguments[k] for k in expected} == expected
    assert arguments.get("progress_bar", arguments.get("progress")) is False
    if isinstance(request_, DecoderRequest):
        from pixelscene.train.decoder import DecoderTuneSettings

        defaults = DecoderTuneSettings()
        settings = arguments["settings"]  # the flags' settings; the rest the trainer's own
        assert settings == DecoderTuneSettings(gan_weight=0.5, steps=defaults.steps)


def test_run_stage_takes_only_stage_requests():
    with pytest.raises(TypeError, match="not a stage request"):
        run_stage({"stage": "vqgan"})  # type: ignore[arg-type]


def test_a_request_describes_itself_as_json(tmp_path):
    request = VqganRequest(config=micro_vqgan_run(), data_dir=tmp_path, out_dir=tmp_path / "o")
    doc = json.loads(json.dumps(request.describe()))
    assert doc["stage"] == "vqgan" and doc["config"] == "micro"
    assert doc["data_dir"] == str(tmp_path) and doc["steps"] is None
    probe = ProbeRequest(data_dir="d", eval_dir="e", out_dir="o", channels=(8, 16, 32))
    assert probe.describe()["channels"] == [8, 16, 32]
    with pytest.raises(TypeError, match="eval_dir"):
        ProbeRequest(data_dir="d", out_dir="o")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "argv, request_, progress",
    [
        (
            "vqgan --data d --steps 5 --no-progress",
            VqganRequest(data_dir="d", out_dir="o", steps=5),
            False,
        ),
        (
            "tokenizer --data a --data b --data-weights 1,3 --init-from m --max-minutes 2",
            TokenizerRequest(
                data_dirs=["a", "b"],
                data_weights=[1.0, 3.0],
                init_from="m",
                out_dir="o",
                max_minutes=2.0,
            ),
            None,
        ),
        (
            "decoder --model m --data d --eval-data e --lr 1e-3 --gan-weight 0.1 --seed 3",
            DecoderRequest(
                model_dir="m",
                data_dir="d",
                eval_dir="e",
                out_dir="o",
                learning_rate=1e-3,
                gan_weight=0.1,
                seed=3,
            ),
            None,
        ),
        (
            "transformer --data d --vqgan v --config base --resume --no-progress",
            TransformerRequest(
                data_dir="d", vqgan_dir="v", config="base", out_dir="o", resume=True
            ),
            False,
        ),
        (
            "probe --data d --eval-data e --channels 8,16,32 --pool 4 --vqgan-model v",
            ProbeRequest(
                data_dir="d", eval_dir="e", out_dir="o", channels=(8, 16, 32), pool=4, vqgan_dir="v"
            ),
            None,
        ),
        (
            "probe --data d --data d2 --eval-data e --init-from p",
            ProbeRequest(data_dir=["d", "d2"], eval_dir="e", out_dir="o", init_from="p"),
            None,
        ),
    ],
)
@pytest.mark.parametrize("interrupted", [False, True])
def test_train_commands_run_the_request_of_their_flags(
    monkeypatch, capsys, argv, request_, progress, interrupted
):
    ran = []

    def fake_run_stage(request, progress=None):
        ran.append((request, progress))
        return TrainResult(5, interrupted, 0.25, {"psnr": 30.0}, last_train={"loss": 0.5})

    monkeypatch.setattr(stages, "run_stage", fake_run_stage)
    code = cli.main(["train", *argv.split(), "--out", "o"])
    assert ran == [(request_, progress)]
    assert code == (130 if interrupted else 0)  # an interrupted run resumes: not a success
    line = json.loads(capsys.readouterr().out)
    assert line == {
        "step": 5,
        "interrupted": interrupted,
        "seconds_per_step": 0.25,
        "train": {"loss": 0.5},
        "eval": {"psnr": 30.0},
        "budget_reached": False,
    }
