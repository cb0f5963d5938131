"""Adherence evaluation: held-out prompts, scoring, diversity, the settings table, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pixelscene import cli
from pixelscene.data.attributes import ATTRIBUTES
from pixelscene.eval import adherence, probe
from pixelscene.eval.adherence import EvalPrompt
from pixelscene.pipeline import PixelScene
from pixelscene.testing import make_random_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_random_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    """An untrained probe: the plumbing is under test here, not the figures."""
    d = tmp_path_factory.mktemp("probe")
    p = probe.AttributeProbe()
    p.eval()
    probe.save_probe(d, p, {"eval_accuracy": {**{k: 0.5 for k in ATTRIBUTES}, "mean": 0.5}})
    return d


def test_prompts_are_held_out_deterministic_and_name_their_attributes():
    from pixelscene.data.captions import named_values
    from pixelscene.data.synth import is_heldout

    a = adherence.build_prompts(200, seed=0)
    assert a == adherence.build_prompts(200, seed=0)
    assert a != adherence.build_prompts(200, seed=1)
    assert len(a) == 200
    for p in a:
        assert is_heldout(p.attributes)
        assert p.named
        found = named_values(p.text)
        for k in p.named:
            assert (k, p.attributes[k]) in found
    # Complete prompts name nearly every attribute whose value is not "none".
    named = sum(len(p.named) for p in a)
    assert named >= 3 * len(a)
    assert {k for p in a for k in p.named} == set(ATTRIBUTES)


def test_named_attributes_skips_unnamed_and_ambiguous():
    attrs = {
        "time": "night",
        "weather": "rain",
        "terrain": "coast",
        "landmark": "none",
        "vegetation": "none",
    }
    assert adherence.named_attributes("the ocean at night in the rain", attrs) == (
        "time",
        "weather",
        "terrain",
    )
    # A second terrain value named: terrain is ambiguous and not scored.
    assert adherence.named_attributes("a lake by the sea at night", attrs) == ("time",)


def test_score_and_diversity():
    attrs = {
        "time": "day",
        "weather": "clear",
        "terrain": "hills",
        "landmark": "castle",
        "vegetation": "pine",
    }
    prompts = [
        EvalPrompt("a", attrs, ("time", "landmark")),
        EvalPrompt("b", attrs, ("time",)),
    ]
    preds = [{**attrs, "landmark": "tower"}, dict(attrs)]
    s = adherence.score(prompts, preds)
    assert s["adherence"] == pytest.approx(2 / 3)
    assert s["per_attribute"] == {"time": 1.0, "landmark": 0.0}
    assert s["named_counts"]["time"] == 2 and s["named_counts"]["weather"] == 0
    assert s["all_named"] == 0.5
    grids = np.zeros((3, 13, 20), np.int32)
    grids[2, 0, :13] = 1  # 13 of 260 codes differ: 0.05
    mean, dup = adherence.diversity(grids)
    assert mean == pytest.approx((0 + 0.05 + 0.05) / 3)
    assert dup == pytest.approx(1 / 3)


def test_evaluate_end_to_end(tmp_path, model_dir, probe_dir):
    scene = PixelScene.load(model_dir)
    p, info = probe.load_probe(probe_dir)
    calls = []
    result = adherence.evaluate(
        scene,
        p,
        info,
        prompts=6,
        cfg_grid=(1.0, 3.0),
        temperature_grid=(1.0,),
        grid_prompts=3,
        diversity_prompts=2,
        diversity_seeds=3,
        batch_size=8,
        paraphrases=4,
        grid_path=tmp_path / "grid.png",
        progress=lambda done, total: calls.append((done, total)),
    )
    for key in (
        "adherence",
        "adherence_empty_prompt",
        "probe_accuracy",
        "prompts",
        "per_attribute",
    ):
        assert key in result
    assert result["prompts"] == 6 and result["probe_accuracy"] == 0.5
    # the probe's accuracy per attribute, in the JSON and in the printed report
    assert result["probe_per_attribute"] == {k: 0.5 for k in ATTRIBUTES}
    assert "per attribute: time 0.500, weather 0.500" in adherence.format_report(result)
    assert 0.0 <= result["adherence"] <= 1.0 and 0.0 <= result["adherence_empty_prompt"] <= 1.0
    assert set(result["per_attribute"]) <= set(ATTRIBUTES)
    rows = result["settings_table"]["rows"]
    assert [(r["cfg_scale"], r["temperature"]) for r in rows] == [(1.0, 1.0), (3.0, 1.0)]
    d = result["diversity"]
    assert 0.5 < d["mean_pairwise_hamming"] <= 1.0 and d["duplicate_fraction"] == 0.0
    para = result["paraphrase"]
    assert para["prompts"] == 4 and 0.0 <= para["adherence"] <= 1.0
    assert para["named_counts"]["time"] == 4
    assert result["text_encoder"] == "learned" and result["prompt_encode_ms"] > 0
    total = 260 * (6 + 6 + 4 + 3 * 2 + 2 * 3)
    assert calls[-1] == (total, total)
    with Image.open(tmp_path / "grid.png") as im:
        assert im.size == (4 * 320 + 3 * 2, 2 * 200 + 2)
        assert "1. " in im.text["prompts"]
    json.dumps(result)


def test_evaluate_scores_a_perfect_probe_as_one(model_dir, probe_dir, monkeypatch):
    scene = PixelScene.load(model_dir)
    p, info = probe.load_probe(probe_dir)
    prompts = adherence.build_prompts(4, seed=0)
    monkeypatch.setattr(
        probe,
        "predict_attributes",
        lambda _, pixels: [q.attributes for q in prompts[: len(pixels)]],
    )
    result = adherence.evaluate(
        scene, p, info, prompts=4, cfg_grid=(3.0,), temperature_grid=(1.0,), grid_prompts=2,
        diversity_prompts=1, diversity_seeds=2, paraphrases=0,
    )  # fmt: skip
    assert result["adherence"] == 1.0 and result["settings_table"]["rows"][0]["adherence"] == 1.0
    assert all(v == 1.0 for v in result["per_attribute"].values())


def test_cli_eval_adherence_json(model_dir, probe_dir, capsys, monkeypatch):
    monkeypatch.setenv("PIXELSCENE_NO_OPENBLAS", "1")
    rc = cli.main(
        ["eval", "adherence", "--json", "--model", str(model_dir), "--probe", str(probe_dir)]
        + [
            "--prompts",
            "3",
            "--cfg-grid",
            "1,5",
            "--temperature-grid",
            "1.0",
            "--grid-prompts",
            "1",
        ]
        + ["--diversity-prompts", "1", "--diversity-seeds", "2", "--paraphrases", "2"]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["prompts"] == 3 and result["paraphrase"]["prompts"] == 2
    assert [r["cfg_scale"] for r in result["settings_table"]["rows"]] == [1.0, 5.0]
    assert result["probe_accuracy_source"].startswith("stored")
    assert (
        cli.main(["eval", "adherence", "--model", str(model_dir), "--probe", "/nonexistent"]) == 2
    )
    assert "not a probe folder" in capsys.readouterr().err


def test_probe_accuracy_measured_on_given_scenes(model_dir, probe_dir, tmp_path, capsys):
    from pixelscene.data.attribute_data import load_attribute_data
    from pixelscene.data.synth import write_dataset
    from pixelscene.eval.probe import accuracy, load_probe

    write_dataset(tmp_path / "test", 6, seed=2, split="test")
    rc = cli.main(
        ["eval", "adherence", "--json", "--model", str(model_dir), "--probe", str(probe_dir)]
        + ["--probe-data", str(tmp_path / "test"), "--prompts", "2", "--grid-prompts", "0"]
        + ["--diversity-prompts", "0", "--paraphrases", "0"]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    probe, _ = load_probe(probe_dir)
    expected = accuracy(probe, *load_attribute_data(tmp_path / "test", pool=probe.pool))
    assert result["probe_accuracy"] == pytest.approx(expected["mean"])
    assert result["probe_per_attribute"] == pytest.approx(
        {k: v for k, v in expected.items() if k != "mean"}
    )
    assert result["probe_accuracy_source"] == f"measured on {tmp_path / 'test'} (6 scenes)"
    bad = ["eval", "adherence", "--model", str(model_dir), "--probe", str(probe_dir)]
    assert cli.main([*bad, "--probe-data", str(tmp_path / "nothing")]) == 2
    assert "attributes file not found" in capsys.readouterr().err


def test_paraphrases_use_no_caption_words_and_name_held_out_scenes():
    import re

    from pixelscene.data import captions
    from pixelscene.data.captions import named_values
    from pixelscene.data.synth import is_heldout
    from pixelscene.eval.paraphrases import PARAPHRASES, build_paraphrases

    def strings(obj):
        if isinstance(obj, str):
            yield obj
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from strings(v)
        elif isinstance(obj, list | tuple | set):
            for v in obj:
                yield from strings(v)

    grammar_words = {
        w
        for name, value in vars(captions).items()
        if name.isupper()
        for text in strings(value)
        for w in re.findall(r"[a-z]+", text.lower())
    }
    assert {"sunset", "castle", "oaks", "snowy", "dunes"} <= grammar_words
    for attr, table in PARAPHRASES.items():
        assert set(table) == set(ATTRIBUTES[attr])
        for value, phrases in table.items():
            for phrase in phrases:
                assert not named_values(phrase), (attr, value, phrase)
                new = set(re.findall(r"[a-z]+", phrase.lower())) - grammar_words
                assert new, f"{phrase!r} uses only words the grammar writes"
    prompts = build_paraphrases(120)
    assert prompts == build_paraphrases(120) and len(prompts) >= 100
    assert len({p.text for p in prompts}) > 100
    for p in prompts:
        assert is_heldout(p.attributes) and not named_values(p.text)
        assert {"time", "weather", "terrain"} <= set(p.named)
        for k in p.named:  # the text carries a phrase for each scored attribute
            assert any(ph in p.text for ph in PARAPHRASES[k][p.attributes[k]])
