"""Typed, validated configuration: one dataclass per model part, loaded from YAML presets.

A preset (configs/tiny.yaml) has the sections below; a model folder's config.json holds
the same tree. Loading validates strictly: an unknown key, a wrong type or an image size
the VQGAN cannot tile gives a ConfigError naming the key (reading files and checking types:
`pixelscene.config_io`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixelscene.config_io import ConfigError, build, find_config, located, read_config


@dataclass
class VQGANConfig:
    in_channels: int = 3
    hidden_channels: int = 128
    channel_multipliers: list[int] = field(default_factory=lambda: [1, 2, 2, 4])
    num_res_blocks: int = 2
    codebook_size: int = 512
    codebook_dim: int = 32
    # Full image size (height, width) and the replicated edge rows added above and below
    # so that the padded height tiles into the latent grid: 200 + 4 + 4 = 208 = 13 * 16.
    image_size: list[int] = field(default_factory=lambda: [200, 320])
    pad_rows: list[int] = field(default_factory=lambda: [4, 4])
    disc_channels: int = 64
    disc_layers: int = 3
    # The encoder starts with a lossless space-to-depth "patchify" by patch_size (1, 2, 4, ...),
    # which stands in for the first log2(patch_size) levels (they get no residual blocks) and
    # the decoder ends with the inverse. On a CPU, layers at full resolution cost more than
    # the rest of the network together; small presets use 4. 1 = the plain architecture.
    patch_size: int = 1

    @property
    def downsample_factor(self) -> int:
        return 2 ** len(self.channel_multipliers)

    @property
    def padded_size(self) -> tuple[int, int]:
        return self.image_size[0] + sum(self.pad_rows), self.image_size[1]

    @property
    def grid_size(self) -> tuple[int, int]:
        ph, pw = self.padded_size
        f = self.downsample_factor
        return ph // f, pw // f

    def validate(self, prefix: str = "vqgan") -> None:
        _positive(self, prefix, ["in_channels", "hidden_channels", "num_res_blocks"])
        _positive(self, prefix, ["codebook_size", "codebook_dim", "disc_channels", "disc_layers"])
        if not self.channel_multipliers or any(m <= 0 for m in self.channel_multipliers):
            raise ConfigError(
                f"{prefix}.channel_multipliers must be a non-empty list of positive ints"
            )
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ConfigError(f"{prefix}.image_size must be [height, width] with positive values")
        if len(self.pad_rows) != 2 or min(self.pad_rows) < 0:
            raise ConfigError(f"{prefix}.pad_rows must be [top, bottom] with values >= 0")
        levels = len(self.channel_multipliers)
        if self.patch_size not in [2**i for i in range(levels)]:
            raise ConfigError(
                f"{prefix}.patch_size must be a power of 2 below 2**len(channel_multipliers)"
                f" = {2**levels}, got {self.patch_size}"
            )
        ph, pw = self.padded_size
        f = self.downsample_factor
        if ph % f or pw % f:
            raise ConfigError(
                f"{prefix}.image_size {self.image_size} padded by {prefix}.pad_rows {self.pad_rows} "
                f"is {ph}x{pw}, which the {f}x downsampling of {prefix}.channel_multipliers "
                f"does not divide"
            )


@dataclass
class TokenizerConfig:
    """The categorical image tokenizer (`pixelscene.imagetok`): patches of the padded image
    become FSQ codes; the decoder paints every pixel as a choice among 64 DAC levels per
    channel, so its output is 6-bit VGA colour by construction."""

    patch_size: int = 8
    dim: int = 256
    encoder_blocks: int = 3
    decoder_blocks: int = 6
    # FSQ levels per code dimension; the codebook is their product (7*5*5*5*5 = 4375).
    fsq_levels: list[int] = field(default_factory=lambda: [7, 5, 5, 5, 5])
    codes_per_position: int = 1
    pixel_features: int = 32
    color_levels: int = 64
    # "mixture": each pixel chooses among `mixture_components` candidate colours (discretised
    # logistics per channel); "softmax": 64 independent logits per channel.
    head: str = "mixture"
    mixture_components: int = 4
    # > 0: the image's palette (up to this many colours) travels with the codes and every
    # pixel chooses one of its entries (`pixelscene.imagetok.palette`); `head` is unused.
    palette_size: int = 0
    image_size: list[int] = field(default_factory=lambda: [200, 320])
    pad_rows: list[int] = field(default_factory=lambda: [4, 4])

    @property
    def codebook_size(self) -> int:
        return math.prod(self.fsq_levels)

    @property
    def padded_size(self) -> tuple[int, int]:
        return self.image_size[0] + sum(self.pad_rows), self.image_size[1]

    @property
    def grid_size(self) -> tuple[int, int]:
        ph, pw = self.padded_size
        return ph // self.patch_size, pw // self.patch_size

    def validate(self, prefix: str = "tokenizer") -> None:
        _positive(self, prefix, ["patch_size", "dim", "decoder_blocks", "codes_per_position"])
        _positive(self, prefix, ["pixel_features", "color_levels"])
        if self.encoder_blocks < 0:
            raise ConfigError(f"{prefix}.encoder_blocks must be >= 0")
        if self.head not in ("mixture", "softmax"):
            raise ConfigError(f"{prefix}.head must be 'mixture' or 'softmax'")
        _positive(self, prefix, ["mixture_components"])
        if not 0 <= self.palette_size <= 256:
            raise ConfigError(f"{prefix}.palette_size must be in 0..256")
        if not self.fsq_levels or any(n < 2 for n in self.fsq_levels):
            raise ConfigError(f"{prefix}.fsq_levels must be a non-empty list of ints >= 2")
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ConfigError(f"{prefix}.image_size must be [height, width] with positive values")
        if len(self.pad_rows) != 2 or min(self.pad_rows) < 0:
            raise ConfigError(f"{prefix}.pad_rows must be [top, bottom] with values >= 0")
        ph, pw = self.padded_size
        if ph % self.patch_size or pw % self.patch_size:
            raise ConfigError(
                f"{prefix}.image_size {self.image_size} padded by {prefix}.pad_rows "
                f"{self.pad_rows} is {ph}x{pw}, which {prefix}.patch_size {self.patch_size} "
                "does not divide"
            )


@dataclass
class TransformerConfig:
    embed_dim: int = 256
    num_heads: int = 8
    num_layers: int = 6
    mlp_ratio: int = 4
    dropout: float = 0.1
    # "learned": a small transformer text encoder trained with the model;
    # "minilm": frozen all-MiniLM-L6-v2 token states through a learned projection.
    text_encoder: str = "learned"
    text_embed_dim: int = 256
    text_num_heads: int = 4
    text_num_layers: int = 2
    max_text_len: int = 48
    text_vocab_size: int = 2048
    # Probability of dropping the caption in training, for classifier-free guidance.
    cfg_dropout: float = 0.1
    # Also add an MLP of the mean caption state to every code's input embedding: a direct
    # path from the caption to every position, which a small model learns far sooner than
    # it learns to use cross-attention (which stays, for the words' details).
    pooled_text: bool = False
    # The output head. "full": one softmax over the whole vocabulary. "digits" (categorical
    # tokenizer with a palette): a grid code is written as its FSQ digits one after another,
    # each a small softmax given the position's state and the digits before it (the same
    # likelihood, factorised: 35 logits instead of 15,360 for [8, 8, 8, 6, 5]); palette
    # tokens keep a softmax over their own 65 values.
    head: str = "full"

    def validate(self, prefix: str = "transformer") -> None:
        _positive(self, prefix, ["embed_dim", "num_heads", "num_layers", "mlp_ratio"])
        _positive(self, prefix, ["text_embed_dim", "text_num_heads", "max_text_len"])
        _positive(self, prefix, ["text_vocab_size"])
        if self.text_num_layers < 0:
            raise ConfigError(f"{prefix}.text_num_layers must be >= 0")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"{prefix}.embed_dim must be divisible by {prefix}.num_heads")
        if self.text_embed_dim % self.text_num_heads:
            raise ConfigError(
                f"{prefix}.text_embed_dim must be divisible by {prefix}.text_num_heads"
            )
        if self.text_encoder not in ("learned", "minilm"):
            raise ConfigError(f"{prefix}.text_encoder must be 'learned' or 'minilm'")
        if self.head not in ("full", "digits"):
            raise ConfigError(f"{prefix}.head must be 'full' or 'digits', got {self.head!r}")
        for key in ("dropout", "cfg_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"{prefix}.{key} must be in [0, 1)")


@dataclass
class VQGANTrainConfig:
    batch_size: int = 8
    learning_rate: float = 2e-4
    crop_size: int = 64
    steps: int = 20000
    warmup_steps: int = 200
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    commitment_weight: float = 0.25
    disc_start: int = 5000
    disc_weight: float = 0.5
    disc_learning_rate: float = 2e-4
    dead_code_threshold: float = 0.03
    log_every: int = 20
    sample_every: int = 500
    eval_every: int = 1000
    eval_images: int = 64
    checkpoint_every: int = 500

    def validate(self, prefix: str = "train_vqgan") -> None:
        _positive(self, prefix, ["batch_size", "learning_rate", "crop_size", "steps"])
        _positive(self, prefix, ["log_every", "sample_every", "eval_every", "checkpoint_every"])
        if self.crop_size % 16:
            raise ConfigError(f"{prefix}.crop_size must be a multiple of 16")


@dataclass
class TokenizerTrainConfig:
    batch_size: int = 4
    learning_rate: float = 1e-3
    crop_size: int = 128
    steps: int = 20000
    warmup_steps: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # Fraction of each batch's pixels whose colour loss is computed (a random subset).
    loss_pixels: float = 0.25
    # > 0: a pixel that a landmark or vegetation sprite covers weighs 1 + sprite_weight in
    # the loss (in data folders made by `pixelscene synth`, whose renderer knows them)
    sprite_weight: float = 0.0
    log_every: int = 20
    eval_every: int = 1000
    eval_images: int = 32
    checkpoint_every: int = 250

    def validate(self, prefix: str = "train_tokenizer") -> None:
        _positive(self, prefix, ["batch_size", "learning_rate", "crop_size", "steps"])
        _positive(self, prefix, ["log_every", "eval_every", "eval_images", "checkpoint_every"])
        if not 0.0 < self.loss_pixels <= 1.0:
            raise ConfigError(f"{prefix}.loss_pixels must be in (0, 1]")
        if not (math.isfinite(self.sprite_weight) and self.sprite_weight >= 0):
            raise ConfigError(f"{prefix}.sprite_weight must be a number >= 0")


@dataclass
class TransformerTrainConfig:
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    steps: int = 10000
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    log_every: int = 20
    eval_every: int = 500
    checkpoint_every: int = 500
    # Weight of the first row of codes in the training loss (every other code weighs 1).
    # The caption alone decides the first codes (the sky's colours); later codes can mostly
    # copy their neighbours, so in a plain mean the caption's most important decision is a
    # few of 260 terms and is learned last. Evaluation losses stay unweighted.
    first_row_weight: float = 1.0
    # Text encoder "minilm" only: Gaussian noise, in units of each state's RMS, added to the
    # frozen caption states in training, so the model reads a neighbourhood of each caption
    # rather than exact points, and paraphrases that land near it read the same.
    text_noise: float = 0.0
    # A code's loss weight is 1 + sprite_weight x the fraction of its 16x16 cell that the
    # landmark and vegetation sprites cover (a castle: ~6 of 260 codes; re-rendered from a
    # `pixelscene synth` dataset, see `pixelscene.data.sprites`), so drawing what a prompt
    # names is not drowned by sky and ground. 0 turns it off.
    sprite_weight: float = 0.0

    def validate(self, prefix: str = "train_transformer") -> None:
        _positive(self, prefix, ["batch_size", "learning_rate", "steps"])
        _positive(self, prefix, ["log_every", "eval_every", "checkpoint_every"])
        _positive(self, prefix, ["first_row_weight"])
        if self.text_noise < 0:
            raise ConfigError(f"{prefix}.text_noise must be >= 0")
        if self.sprite_weight < 0:
            raise ConfigError(f"{prefix}.sprite_weight must be >= 0")


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_k: int = 0  # 0 disables
    top_p: float = 1.0
    cfg_scale: float = 3.0
    # How a token is drawn (`pixelscene.sampling.samplers`): "gumbel", the Gumbel-max trick
    # with one noise value per token of the vocabulary per position; "uniform", one uniform
    # value per position and the inverse of the cumulative distribution: far less noise to
    # draw for a large vocabulary and a long sequence. A model's images depend on it.
    noise: str = "gumbel"

    def validate(self, prefix: str = "sampling") -> None:
        for key in ("temperature", "top_p", "cfg_scale"):
            if not math.isfinite(getattr(self, key)):
                raise ConfigError(
                    f"{prefix}.{key} must be a finite number, got {getattr(self, key)!r}"
                )
        if self.temperature <= 0:
            raise ConfigError(f"{prefix}.temperature must be > 0")
        if self.top_k < 0:
            raise ConfigError(f"{prefix}.top_k must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"{prefix}.top_p must be in (0, 1]")
        if self.cfg_scale < 0:
            raise ConfigError(f"{prefix}.cfg_scale must be >= 0")
        if self.noise not in ("gumbel", "uniform"):
            raise ConfigError(f"{prefix}.noise must be 'gumbel' or 'uniform', got {self.noise!r}")


@dataclass(frozen=True)
class TokenLayout:
    """How one image's codes lie in the transformer's sequence.

    `shape` is one image's codes as the image tokenizer encodes and decodes them: the
    VQGAN's (13, 20) grid, or the categorical tokenizer's flat row (3 * palette tokens, then
    the grid in raster order). `segments` restrict which tokens a position may take:
    (start, stop, low, high) lets positions start..stop-1 take only tokens low..high-1 (a
    palette slot never holds a grid code); none means every position takes any token.
    """

    vocab: int  # distinct token values; BOS is the extra id `vocab`
    shape: tuple[int, ...]
    grid: tuple[int, int]  # rows and columns of the code grid
    grid_start: int = 0  # sequence position of the grid's first code
    segments: tuple[tuple[int, int, int, int], ...] = ()
    # FSQ levels of a grid code's digits (code = sum of digit_k * prod(levels[:k])), where
    # the codes are FSQ codes; what a "digits" transformer head writes
    digits: tuple[int, ...] = ()

    @property
    def length(self) -> int:
        return math.prod(self.shape)


@dataclass
class Config:
    name: str = "custom"
    # Which image tokenizer the model folder holds: "vqgan" (vqgan.safetensors) or
    # "categorical" (tokenizer.safetensors, `pixelscene.imagetok`).
    image_tokenizer: str = "vqgan"
    vqgan: VQGANConfig = field(default_factory=VQGANConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    train_vqgan: VQGANTrainConfig = field(default_factory=VQGANTrainConfig)
    train_tokenizer: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)
    train_transformer: TransformerTrainConfig = field(default_factory=TransformerTrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def validate(self) -> Config:
        if self.image_tokenizer not in ("vqgan", "categorical"):
            raise ConfigError("image_tokenizer must be 'vqgan' or 'categorical'")
        for f in dataclasses.fields(self):
            part = getattr(self, f.name)
            if hasattr(part, "validate"):
                part.validate(f.name)
        if self.transformer.head == "digits":
            if self.image_tokenizer != "categorical" or not self.tokenizer.palette_size:
                raise ConfigError(
                    "transformer.head 'digits' needs image_tokenizer 'categorical' with a "
                    "palette (tokenizer.palette_size > 0)"
                )
            if self.sampling.noise != "uniform":
                raise ConfigError("transformer.head 'digits' draws with sampling.noise 'uniform'")
        return self

    def token_layout(self) -> TokenLayout:
        """The image tokenizer's codes as the transformer writes them."""
        if self.image_tokenizer == "vqgan":
            grid = tuple(self.vqgan.grid_size)
            return TokenLayout(self.vqgan.codebook_size, grid, grid)
        tk = self.tokenizer
        grid = tuple(tk.grid_size)
        codes = tk.codebook_size
        if not tk.palette_size:
            k = tk.codes_per_position
            return TokenLayout(codes, grid if k == 1 else (*grid, k), grid)
        head = 3 * tk.palette_size  # 3 level tokens per palette entry, then the grid
        length = head + grid[0] * grid[1]
        vocab = codes + tk.color_levels + 1  # the levels, then EMPTY
        segments = ((0, head, codes, vocab), (head, length, 0, codes))
        return TokenLayout(vocab, (length,), grid, head, segments, tuple(tk.fsq_levels))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build and validate a Config; unknown keys and wrong types raise ConfigError."""
        return build(cls, data).validate()


def _positive(obj: Any, prefix: str, keys: list[str]) -> None:
    for key in keys:
        if getattr(obj, key) <= 0:
            raise ConfigError(f"{prefix}.{key} must be > 0, got {getattr(obj, key)!r}")


def load_config(path: str | Path) -> Config:
    """Load a YAML preset or a model folder's config.json (a name like 'tiny' means configs/tiny.yaml).

    Errors name the file and, where the value is found in it, the line."""
    path = find_config(path)
    text, data = read_config(path)
    try:
        return Config.from_dict(data or {})
    except ConfigError as e:
        raise located(e, path, text) from None
