"""`pixelscene bench sampling` runs on presets with either text encoder."""

from __future__ import annotations

import time

import pytest
import yaml

from pixelscene.commands.bench_sampling import _fastest, bench_preset
from pixelscene.sampling.profile import memory_read_gb_per_s, step_times
from pixelscene.testing import MICRO_CONFIG, micro_config


@pytest.mark.parametrize("encoder", ["learned", "minilm"])
def test_bench_preset_reports_the_issue_figures(tmp_path, encoder):
    import mlx.core as mx

    config = dict(MICRO_CONFIG, transformer=dict(MICRO_CONFIG["transformer"], text_encoder=encoder))
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(config))
    result = bench_preset(
        str(path), [1, 2], plan_tokens=2, engines=["cpu", "mlx"], repeats=2, profile=True
    )
    assert result["repeats"] == 2
    for key in ("plan_sampler_s_per_image", "cached_b1_s_per_image", "speedup_b1"):
        assert result[key] > 0, key
    plan, nocfg = result["plan_sampler_s_per_image"], result["cached_b1_nocfg_s_per_image"]
    assert result["speedup_b1_nocfg"] == pytest.approx(plan / nocfg, rel=0.05)
    assert result["cached_b2_s_per_image"] > 0 and result["peak_memory_mb"] > 0
    assert set(result["engines"]) == {"cpu", "mlx"}
    assert result["cached_b1_s_per_image"] == result["engines"][result["engine"]]["b1_s_per_image"]
    assert all(r["b2_s_per_image"] > 0 for r in result["engines"].values())
    assert result["engine_speedup_b1"] >= 1.0 and result["peak_rss_mb"] > 0

    # where the largest batch's time goes, against sizes counted here from the config
    t = MICRO_CONFIG["transformer"]
    D, L, m, V = (
        t["embed_dim"],
        t["num_layers"],
        t["mlp_ratio"],
        MICRO_CONFIG["vqgan"]["codebook_size"],
    )
    weights = L * (3 + 1 + 1 + 1 + 2 * m) * D * D + D * V  # qkv, proj, cross q/proj, mlp; head
    S = 13 * 20
    profile = result["largest_batch"]
    assert profile["batch"] == 2 and profile["rows"] == 4  # guidance: two rows per image
    assert profile["products_gflop_per_step"] == pytest.approx(2 * weights * 4 / 1e9, rel=1e-3)
    cache_bytes = 4 * (2 * L * D) * 2 * S * (S + 1) / 2  # float32 keys+values, 2 rows, 0..t
    assert profile["cache_mb_read_per_image"] == pytest.approx(cache_bytes / 2**20, rel=1e-3)
    assert profile["cache_mb_last_step"] == pytest.approx(4 * 2 * L * D * 4 * S / 2**20, rel=1e-3)
    assert profile["step_ms_first"] > 0 and profile["step_ms_last"] > 0
    if mx.default_device().type != mx.cpu:  # the host's memory speed is a CPU figure
        assert "memory_read_gb_per_s" not in profile
        return
    seconds = profile["cache_mb_read_per_image"] * 2**20 / (profile["memory_read_gb_per_s"] * 1e9)
    assert profile["cache_read_s_per_image_at_memory_speed"] == pytest.approx(seconds, rel=1e-2)


def test_the_profile_is_asked_for(tmp_path):
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(MICRO_CONFIG))
    result = bench_preset(str(path), [1], plan_tokens=2, engines=["cpu"], repeats=1)
    assert "largest_batch" not in result and result["cached_b1_s_per_image"] > 0


@pytest.mark.parametrize("engine", ["cpu", "mlx"])
def test_step_times_has_one_duration_per_position(engine):
    import mlx.core as mx

    from pixelscene.transformer.model import build_transformer

    mx.random.seed(0)
    model = build_transformer(micro_config())
    states = mx.random.normal((1, 4, model.text_dim))
    mask = mx.ones((1, 4), dtype=mx.bool_)
    settings = dict(temperature=1.0, top_k=0, top_p=1.0, cfg_scale=2.0, engine=engine)
    steps = step_times(model, states, mask, 3, settings)
    assert steps.shape == (model.seq_len,) and (steps > 0).all()


def test_memory_read_speed_is_timed_over_the_whole_array(monkeypatch):
    import numpy as np

    from pixelscene.sampling import profile

    seen = []
    real = profile._summer()
    monkeypatch.setattr(profile, "_summer", lambda: lambda x: seen.append(x.size) or real(x))
    assert memory_read_gb_per_s(threads=2, megabytes=8, repeats=1) > 0
    # one compile call on 16 values, then each thread's part: together the whole 8 MB
    assert seen[0] == 16 and sum(seen[1:]) == 8 * 2**20 // np.dtype(np.float32).itemsize


def test_a_timing_is_the_fastest_of_its_repeats():
    delays = iter([0.05, 0.0, 0.05])
    calls = []

    def work():
        calls.append(1)
        time.sleep(next(delays))

    assert _fastest(work, 3) < 0.03  # the quiet run, not the mean (~0.033) or the first
    assert len(calls) == 3
