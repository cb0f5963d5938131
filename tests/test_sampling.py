import ast
import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from pixelscene.errors import PixelsceneError
from pixelscene.sampling import (
    ENGINES,
    SamplingStep,
    generate_codes,
    gumbel_noise,
    make_sampler,
    resolve_engine,
    sample_codes,
    top_k_filter,
    top_p_filter,
)
from pixelscene.testing import micro_transformer_config
from pixelscene.transformer import ImageTransformer

LOGITS = [2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2]
# chi-square critical value, 7 degrees of freedom, p = 0.001
CHI2_CRIT_7 = 24.32


def build(pooled_text: bool = True):
    """A micro model (in training mode) and two captions; the same in any process."""
    mx.random.seed(5)
    cfg = micro_transformer_config(text_num_layers=1, dropout=0.1, pooled_text=pooled_text)
    m = ImageTransformer(cfg, codebook_size=64, seq_len=40)
    mx.eval(m.parameters())
    ids = mx.array([[3, 9, 4, 0, 0, 0, 0, 0], [7, 2, 0, 0, 0, 0, 0, 0]])
    return m, ids, ids != 0


def chi_square(samples: np.ndarray, probs: np.ndarray) -> float:
    counts = np.bincount(samples, minlength=len(probs))
    expected = probs * len(samples)
    return float(((counts - expected) ** 2 / expected).sum())


def draw(sampler, logits, n=40000, seed=0):
    x = mx.broadcast_to(mx.array(logits), (n, len(logits)))
    g = mx.random.gumbel((n, len(logits)), key=mx.random.key(seed))
    return np.array(sampler(x, g))


def softmax(x):
    e = np.exp(np.asarray(x) - np.max(x))
    return e / e.sum()


def test_temperature_one_matches_softmax_of_logits():
    samples = draw(make_sampler(1.0), LOGITS)
    assert chi_square(samples, softmax(LOGITS)) < CHI2_CRIT_7
    # the power of the test: treating probabilities as logits (the plan's bug) is rejected
    wrong = softmax(softmax(LOGITS))
    assert chi_square(samples, wrong) > 10 * CHI2_CRIT_7


def test_temperature_scales_logits():
    samples = draw(make_sampler(0.5), LOGITS, seed=1)
    assert chi_square(samples, softmax(np.array(LOGITS) / 0.5)) < CHI2_CRIT_7
    greedy = draw(make_sampler(0.0), LOGITS, n=10)
    assert (greedy == 0).all()


def test_top_k_keeps_only_the_k_largest():
    x = mx.array([LOGITS])
    kept = np.isfinite(np.array(top_k_filter(x, 3)))[0]
    assert kept.tolist() == [True, True, False, False, False, False, True, False]
    samples = draw(make_sampler(1.0, top_k=3), LOGITS, seed=2)
    assert set(np.unique(samples)) == {0, 1, 6}
    sub = [LOGITS[i] for i in (0, 1, 6)]
    remap = {0: 0, 1: 1, 6: 2}
    assert chi_square(np.array([remap[s] for s in samples]), softmax(sub)) < 13.8  # df 2


def test_top_p_keeps_the_nucleus():
    probs = softmax(LOGITS)
    x = mx.array([LOGITS])
    kept = np.isfinite(np.array(top_p_filter(x, 0.6)))[0]
    order = np.argsort(-probs)
    mass_before = np.cumsum(probs[order]) - probs[order]
    expect = np.zeros(len(probs), bool)
    expect[order[mass_before < 0.6]] = True
    assert kept.tolist() == expect.tolist() and 1 < kept.sum() < len(probs)
    samples = draw(make_sampler(1.0, top_p=0.6), LOGITS, seed=3)
    assert set(np.unique(samples)) <= set(np.flatnonzero(expect))
    assert np.isfinite(np.array(top_p_filter(x, 1e-6)))[0].sum() == 1  # always keeps the top


def draw_uniform(sampler, logits, n=40000, seed=0):
    x = mx.broadcast_to(mx.array(logits), (n, len(logits)))
    return np.array(sampler(x, mx.random.uniform(shape=(n,), key=mx.random.key(seed))))


def test_uniform_noise_draws_the_same_distribution():
    samples = draw_uniform(make_sampler(1.0, noise="uniform"), LOGITS)
    assert chi_square(samples, softmax(LOGITS)) < CHI2_CRIT_7
    assert chi_square(samples, softmax(softmax(LOGITS))) > 10 * CHI2_CRIT_7
    hot = draw_uniform(make_sampler(0.5, noise="uniform"), LOGITS, seed=1)
    assert chi_square(hot, softmax(np.array(LOGITS) / 0.5)) < CHI2_CRIT_7
    kept = draw_uniform(make_sampler(1.0, top_k=3, noise="uniform"), LOGITS, seed=2)
    assert set(np.unique(kept)) == {0, 1, 6}
    # masked tokens (very low logits, as a segment mask makes them) are never drawn, even at
    # the ends of the uniform range
    masked = mx.array([[-1e9, 0.0, 1.0, -1e9]] * 3)
    edges = make_sampler(1.0, noise="uniform")(masked, mx.array([0.0, 0.5, 0.9999999]))
    assert np.isin(np.array(edges), [1, 2]).all()


def test_gumbel_noise_is_per_seed():
    a = gumbel_noise([7, 8], 5, 4)
    b = gumbel_noise([8], 5, 4)
    assert mx.array_equal(a[1], b[0]) and not mx.array_equal(a[0], a[1])


@pytest.fixture(scope="module", params=[False, True], ids=["cross-attention", "pooled"])
def model(request):
    m, ids, mask = build(request.param)
    return m, *m.encode_text(ids, mask)


@pytest.mark.parametrize("engine", ENGINES)
def test_generate_yields_progress_then_codes(model, engine):
    m, states, mask = model
    gen = generate_codes(
        m, states, mask, seeds=[1, 2, 3, 4], progress_every=10, compiled=False, engine=engine
    )
    steps = list(gen)
    assert [s.done for s in steps] == [10, 20, 30, 40] and all(s.total == 40 for s in steps)
    assert all(s.codes is None for s in steps[:-1])
    codes = steps[-1].codes
    assert isinstance(steps[-1], SamplingStep)
    assert codes.shape == (4, 40) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < 64
    assert m.training  # restored after generation (build() leaves the model in training mode)


@pytest.mark.parametrize("noise", ["gumbel", "uniform"])
@pytest.mark.parametrize("engine", ENGINES)
def test_same_seed_alone_or_in_a_batch_gives_same_codes(model, engine, noise):
    m, states, mask = model
    kw = dict(temperature=1.0, top_k=20, top_p=0.95, cfg_scale=2.5, compiled=False, engine=engine)
    kw["noise"] = noise
    batch = sample_codes(m, states, mask, seeds=[11, 12, 13, 14], **kw)  # 2 prompts x 2
    alone = sample_codes(m, states[1:], mask[1:], seeds=[13], **kw)
    assert np.array_equal(batch[2], alone[0])
    assert not np.array_equal(batch[2], batch[3])
    again = sample_codes(m, states, mask, seeds=[11, 12, 13, 14], **kw)
    assert np.array_equal(batch, again)


def test_compiled_matches_uncompiled(model):
    m, states, mask = model
    kw = dict(seeds=[3, 4], cfg_scale=3.0, engine="mlx")
    a = sample_codes(m, states, mask, compiled=True, **kw)
    b = sample_codes(m, states, mask, compiled=False, **kw)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    "settings",
    [
        dict(cfg_scale=3.0),
        dict(cfg_scale=1.0, temperature=0.7),
        dict(cfg_scale=2.0, top_k=10, top_p=0.9),
        dict(cfg_scale=5.0, temperature=0.0),
        dict(cfg_scale=3.0, noise="uniform"),
        dict(cfg_scale=2.0, top_k=10, top_p=0.9, noise="uniform"),
    ],
    ids=["cfg3", "no-guidance", "filters", "greedy", "uniform", "uniform-filters"],
)
@pytest.mark.parametrize(
    "seeds", [[5, 6], [5, 6, 7, 8]], ids=["one-part", "parts"]
)  # 2 prompts x 1 or 2 images: with guidance, 8 rows step in parallel parts
def test_cpu_engine_gives_the_mlx_engines_codes(model, settings, seeds):
    m, states, mask = model
    a = sample_codes(m, states, mask, seeds=seeds, engine="mlx", **settings)
    b = sample_codes(m, states, mask, seeds=seeds, engine="cpu", **settings)
    assert np.array_equal(a, b)
    assert len({tuple(r) for r in a}) >= 2  # distinct images, so the comparison has teeth


def test_engine_choice(model):
    m, states, mask = model
    assert resolve_engine("auto") == ("cpu" if mx.default_device().type == mx.cpu else "mlx")
    assert resolve_engine(" MLX ") == "mlx" and resolve_engine("cpu") == "cpu"
    for bad in ("torch", "numpy", ""):
        with pytest.raises(PixelsceneError, match="engine must be one of auto, cpu, mlx"):
            resolve_engine(bad)
    with pytest.raises(PixelsceneError, match="engine must be one of"):
        sample_codes(m, states, mask, seeds=[1, 2], engine="cuda")


def test_nothing_outside_the_sampling_package_imports_the_cpu_engine():
    """The cpu engine and its kernels are the sampling package's business: callers pick an
    engine by name. (Tests of the engine itself import it; they are not searched.)"""
    root = Path(__file__).resolve().parent.parent
    package = root / "pixelscene" / "sampling"
    files = [
        f
        for folder in ("pixelscene", "service", "workers", "scripts", "benchmarks")
        for f in (root / folder).rglob("*.py")
        if package not in f.parents
    ]
    assert len(files) > 50  # the search found the project
    offenders = [str(f.relative_to(root)) for f in files if cpu_engine_imports(f.read_text())]
    assert offenders == []
    # the search has teeth
    assert cpu_engine_imports("from pixelscene.sampling import cpu_engine")
    assert cpu_engine_imports("def f():\n    import pixelscene.sampling.cpu_kernels as k")
    assert cpu_engine_imports("from pixelscene.sampling.cpu_engine import warm_up")
    assert not cpu_engine_imports("from pixelscene.sampling import warm_up, sample_codes")


def cpu_engine_imports(source: str) -> list[str]:
    """The CPU engine modules an `import` in this Python source names."""
    private = {"cpu_engine", "cpu_kernels"}
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found += [
            n for n in names if n.startswith("pixelscene.sampling.") and n.split(".")[2] in private
        ]
    return found


def test_guidance_changes_codes(model):
    m, states, mask = model
    a = sample_codes(m, states, mask, seeds=[3, 4], cfg_scale=1.0, compiled=False)
    b = sample_codes(m, states, mask, seeds=[3, 4], cfg_scale=4.0, compiled=False)
    assert not np.array_equal(a, b)


def test_seed_reproducible_in_a_new_process(model):
    m, states, mask = model
    codes = sample_codes(m, states, mask, seeds=[21, 22], cfg_scale=3.0)
    script = (
        f"import sys, json\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_sampling import build\nfrom pixelscene.sampling import sample_codes\n"
        f"m, ids, mask = build({m.cfg.pooled_text})\n"
        "c = sample_codes(m, *m.encode_text(ids, mask), seeds=[21, 22], cfg_scale=3.0)\n"
        "print(json.dumps(c.tolist()))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == codes.tolist()


def test_bad_seed_count_is_rejected(model):
    m, states, mask = model
    with pytest.raises(ValueError):
        sample_codes(m, states, mask, seeds=[1, 2, 3])


def test_float16_models_sample_the_same_codes_on_both_engines():
    """A model holding float16 values (as loaded from its file) steps on float16 weights."""
    from pixelscene.model_io import round_to_float16
    from pixelscene.sampling.cpu_engine import cpu_decoder

    m, ids, mask = build(False)
    round_to_float16(m)
    states, mask = m.encode_text(ids, mask)
    assert cpu_decoder(m).half
    for seeds in ([5, 6], [5, 6, 7, 8]):
        a = sample_codes(m, states, mask, seeds=seeds, engine="mlx", cfg_scale=3.0)
        b = sample_codes(m, states, mask, seeds=seeds, engine="cpu", cfg_scale=3.0)
        assert np.array_equal(a, b)


def test_compiled_steps_do_not_keep_a_model_alive():
    import gc
    import weakref

    from mlx.utils import tree_flatten

    m, ids, mask = build(False)
    states, mask = m.encode_text(ids, mask)
    before = {k for k, _ in tree_flatten(m.parameters())}
    sample_codes(m, states, mask, seeds=[1, 2], engine="mlx", compiled=True)
    assert {k for k, _ in tree_flatten(m.parameters())} == before  # the cache is no parameter
    again = sample_codes(m, states, mask, seeds=[1, 2], engine="mlx", compiled=True)
    assert again.shape == (2, 40)
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None
