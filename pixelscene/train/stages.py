"""Every training stage as a typed request, and `run_stage`, which runs one.

`pixelscene train <stage>` builds a request from its flags, a queue worker builds one from
an API request; both call `run_stage`, which calls that stage's trainer. Folders are kept
as the caller gave them (str or Path): some trainers record them as given (probe.json).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pixelscene.config import Config, load_config
from pixelscene.train.decoder import DecoderTuneSettings

if TYPE_CHECKING:
    from pixelscene.train.loop import TrainResult

Folder = str | os.PathLike[str]
_DECODER = DecoderTuneSettings()


@dataclass(kw_only=True)
class StageRequest:
    """What every stage takes: where to write, a seed and a time budget."""

    stage: ClassVar[str]
    out_dir: Folder
    seed: int = 0  # data and init seed of a new run
    max_minutes: float | None = None  # stop, evaluated and exported, after this much training

    def describe(self) -> dict[str, Any]:
        """The request as JSON-able values (folders as strings, a Config by its name)."""
        return {
            "stage": self.stage,
            **{f.name: _plain(getattr(self, f.name)) for f in fields(self)},
        }


@dataclass(kw_only=True)
class ResumableRequest(StageRequest):
    """A stage whose runs checkpoint into `out_dir` and resume exactly."""

    eval_dir: Folder | None = None  # held-out data to evaluate on (None: the training data)
    steps: int | None = None  # total steps (None: the config's or default); extends a resume
    resume: bool = False  # continue the checkpoint in out_dir (its config, not this one's)


@dataclass(kw_only=True)
class VqganRequest(ResumableRequest):
    """Train (or resume) the VQGAN."""

    stage: ClassVar[str] = "vqgan"
    data_dir: Folder
    config: str | Path | Config = "tiny"  # a preset name, YAML file or Config


@dataclass(kw_only=True)
class TokenizerRequest(ResumableRequest):
    """Train (or resume) the categorical image tokenizer on one or more image folders."""

    stage: ClassVar[str] = "tokenizer"
    data_dirs: list[Folder]
    data_weights: list[float] | None = None  # sampling weights, one per folder (None: equal)
    config: str | Path | Config = "pixel"
    init_from: Folder | None = None  # a model folder whose weights (those that fit) start it


@dataclass(kw_only=True)
class DecoderRequest(ResumableRequest):
    """Fine-tune a VQGAN's decoder on whole images (its codes unchanged)."""

    stage: ClassVar[str] = "decoder"
    data_dir: Folder
    model_dir: Folder | None = None  # the model whose VQGAN to start from (None: bundled)
    batch_size: int = _DECODER.batch_size
    learning_rate: float = _DECODER.learning_rate
    l1_weight: float = _DECODER.l1_weight
    l2_weight: float = _DECODER.l2_weight
    gan_weight: float = _DECODER.gan_weight  # 0: no GAN term
    disc_start: int = _DECODER.disc_start
    eval_every: int = _DECODER.eval_every


@dataclass(kw_only=True)
class TransformerRequest(ResumableRequest):
    """Train (or resume, or fine-tune) the transformer on a VQGAN's code grids."""

    stage: ClassVar[str] = "transformer"
    data_dir: Folder
    vqgan_dir: Folder  # the model folder whose VQGAN encodes the data
    config: str | Path | Config = "tiny"
    init_from: Folder | None = None  # a model folder whose transformer weights start a fine-tune


@dataclass(kw_only=True)
class ProbeRequest(StageRequest):
    """Train the attribute probe that scores prompt adherence (no checkpoints, no resume)."""

    stage: ClassVar[str] = "probe"
    data_dir: Folder | list[Folder]  # one synthetic set, or several trained on together
    eval_dir: Folder  # required: the probe's figures are held-out figures
    epochs: int = 6
    batch_size: int = 64
    learning_rate: float = 2e-3
    channels: tuple[int, int, int] = (32, 64, 128)  # widths of the three convolution stages
    pool: int = 2  # average-pool images by this factor first
    degrade: float = 0.5  # fraction of training images blurred like a VQGAN's output
    cache_dir: Folder | None = None  # keep decoded, pooled images here for the next run
    limit: int | None = None  # at most this many training images
    eval_limit: int | None = None
    vqgan_dir: Folder | None = None  # also measure on held-out images after its round trip
    round_trip_limit: int = 200
    train_on_round_trip: bool = False
    maps: bool = True  # also learn per-cell landmark/vegetation maps from the sprite masks
    map_weight: float = 1.0  # weight of the sprite-map loss beside the attribute heads
    init_from: Folder | None = None  # a probe folder whose weights (and architecture) start it


def run_stage(request: StageRequest, progress: bool | None = None) -> TrainResult:
    """Run one training stage.

    Args:
        request: the stage and its settings; its type says which trainer runs.
        progress: None: the trainers' default progress bar; False: none.

    Returns:
        The trainer's TrainResult (`interrupted` when a signal stopped it, checkpointed).
    """
    match request:
        case VqganRequest():
            return _vqgan(request, progress)
        case TokenizerRequest():
            return _tokenizer(request, progress)
        case DecoderRequest():
            return _decoder(request, progress)
        case TransformerRequest():
            return _transformer(request, progress)
        case ProbeRequest():
            return _probe(request, progress)
    raise TypeError(f"not a stage request: {request!r}")


def result_summary(result: TrainResult) -> dict[str, Any]:
    """A TrainResult as one JSON-able line: the step reached, how it ended, the last figures."""
    return {
        "step": result.step,
        "interrupted": result.interrupted,
        "seconds_per_step": round(result.seconds_per_step, 4),
        "train": result.last_train,
        "eval": result.last_eval,
        "budget_reached": result.budget_reached,
    }


def _config(request: VqganRequest | TokenizerRequest) -> Config | None:
    """A new run's config; None on resume, where it comes from the checkpoint."""
    if request.resume:
        return None
    config = request.config
    return config if isinstance(config, Config) else load_config(config)


def _vqgan(request: VqganRequest, progress: bool | None) -> TrainResult:
    from pixelscene.train.vqgan import train_vqgan

    return train_vqgan(
        _config(request),
        request.data_dir,
        request.out_dir,
        steps=request.steps,
        resume=request.resume,
        eval_dir=request.eval_dir,
        seed=request.seed,
        progress_bar=progress,
        max_minutes=request.max_minutes,
    )


def _tokenizer(request: TokenizerRequest, progress: bool | None) -> TrainResult:
    from pixelscene.train.imagetok import train_tokenizer

    return train_tokenizer(
        _config(request),
        list(request.data_dirs),
        request.out_dir,
        data_weights=request.data_weights,
        init_from=request.init_from,
        steps=request.steps,
        resume=request.resume,
        eval_dir=request.eval_dir,
        seed=request.seed,
        progress_bar=progress,
        max_minutes=request.max_minutes,
    )


def _decoder(request: DecoderRequest, progress: bool | None) -> TrainResult:
    from pixelscene.train.decoder import finetune_decoder

    settings = DecoderTuneSettings(
        steps=request.steps or _DECODER.steps,
        batch_size=request.batch_size,
        learning_rate=request.learning_rate,
        l1_weight=request.l1_weight,
        l2_weight=request.l2_weight,
        gan_weight=request.gan_weight,
        disc_start=request.disc_start,
        seed=request.seed,
        eval_every=request.eval_every,
    )
    return finetune_decoder(
        request.model_dir,
        request.data_dir,
        request.out_dir,
        settings,
        resume=request.resume,
        steps=request.steps,
        eval_dir=request.eval_dir,
        progress_bar=progress,
        max_minutes=request.max_minutes,
    )


def _transformer(request: TransformerRequest, progress: bool | None) -> TrainResult:
    from pixelscene.train.transformer import train_transformer

    return train_transformer(
        request.config,
        request.data_dir,
        request.vqgan_dir,
        request.out_dir,
        eval_dir=request.eval_dir,
        steps=request.steps,
        resume=request.resume,
        seed=request.seed,
        progress=progress is not False,
        init_from=request.init_from,
        max_minutes=request.max_minutes,
    )


def _probe(request: ProbeRequest, progress: bool | None) -> TrainResult:
    from pixelscene.train.probe import train_and_save

    return train_and_save(
        request.data_dir,
        request.eval_dir,
        request.out_dir,
        epochs=request.epochs,
        batch_size=request.batch_size,
        learning_rate=request.learning_rate,
        seed=request.seed,
        limit=request.limit,
        eval_limit=request.eval_limit,
        vqgan_dir=request.vqgan_dir,
        round_trip_limit=request.round_trip_limit,
        train_on_round_trip=request.train_on_round_trip,
        channels=list(request.channels),
        pool=request.pool,
        degrade=request.degrade,
        cache_dir=request.cache_dir,
        maps=request.maps,
        map_weight=request.map_weight,
        init_from=request.init_from,
        progress_bar=progress,
        max_minutes=request.max_minutes,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Config):
        return value.name
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
