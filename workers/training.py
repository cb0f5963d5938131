"""A training job: the API's request as a recipe of stages, run in the job's own folder.

    OBJECTS/jobs/<id>/run/data/{train,eval}/   the dataset split (links to its images)
    OBJECTS/jobs/<id>/run/tokenizer/           the image tokenizer's run (checkpoint/, logs)
    OBJECTS/jobs/<id>/run/model/               the transformer's run: the final model folder
    OBJECTS/jobs/<id>/run/phases.json          the stages that have ended, with their figures
    OBJECTS/jobs/<id>/sample.png               the latest sample grid

The folder is keyed by the job id, so a retry of the job (its worker died) finds the
checkpoints and resumes each stage where it stopped, and skips the stages that ended. A
cancel stops the running stage at its next step with a checkpoint (`train.loop.Hooks`).
A finished training with a `name` registers its model as that model's next version
(`workers.jobstore.models`): directly on the shared object directory, or through the API
for a worker without it.

Stages: `tokenizer` trains the preset's image tokenizer (the VQGAN, or the categorical
tokenizer), or with a `base_model` fine-tunes its VQGAN's decoder (the codes, and so the
base's transformer, stay valid); `transformer` trains a transformer on a base model's
tokenizer, fine-tuning the base's own unless a preset names another architecture; `all`
runs both. The older stages map onto these: `vqgan` is `tokenizer`, `decoder` is `tokenizer`
of the model `vqgan`, and `transformer` with `vqgan`/`init_from` keeps its meaning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixelscene.errors import PixelsceneError
from pixelscene.train import loop
from pixelscene.train.stages import (
    DecoderRequest,
    StageRequest,
    TokenizerRequest,
    TransformerRequest,
    VqganRequest,
    result_summary,
    run_stage,
)
from workers import context
from workers.jobstore import models
from workers.jobstore.objects import job_dir, sample_path, write_json_atomic
from workers.jobstore.records import Keys, cancel_requested, encode_fields

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
EVAL_FRACTION, EVAL_MIN, EVAL_MAX = 0.05, 2, 200  # the held-out part of a dataset
SPLIT_FROM = 10  # images below which there is no held-out part (evaluated on training images)
DEFAULT_PRESET = "tiny"


class DatasetMissing(PixelsceneError):
    """The dataset a training names is neither uploaded nor a folder of the datasets dir."""


@dataclass
class Phase:
    """One stage of a recipe: its name, what it runs, and where its model ends up."""

    name: str  # tokenizer or transformer
    request: StageRequest

    @property
    def out_dir(self) -> Path:
        return Path(self.request.out_dir)

    @property
    def checkpoint(self) -> Path:
        folder = "checkpoint_transformer" if self.name == "transformer" else loop.CHECKPOINT
        return self.out_dir / folder


@dataclass
class Recipe:
    """What a training request runs, in order."""

    phases: list[Phase] = field(default_factory=list)

    @property
    def model_dir(self) -> Path:
        return self.phases[-1].out_dir


def run_dir(objects_dir: str | os.PathLike, job_id: str) -> Path:
    return job_dir(objects_dir, job_id) / "run"


def plan(
    request: dict[str, Any],
    run: Path,
    data: Path,
    eval_data: Path | None,
    base: Path | None = None,
    init: Path | None = None,
) -> Recipe:
    """The stages of an API training request (validated by the API's schema).

    Args:
        request: the job's request; `base_model` (or the older `vqgan`) resolved to `base`,
            the older `init_from` to `init`.
        run: the job's run folder; data, eval_data: the dataset's split.
    """
    stage = request["stage"]
    preset = request.get("preset") or request.get("config")
    if request.get("vqgan") and preset is None:
        preset = DEFAULT_PRESET  # the older fields: a transformer of the default preset
    options: dict[str, Any] = {"steps": request.get("steps") or None, "eval_dir": eval_data}
    recipe = Recipe()
    names = {"all": ["tokenizer", "transformer"], "transformer": ["transformer"]}.get(
        stage, ["tokenizer"]
    )  # vqgan and decoder, the older names, are tokenizer stages
    minutes = request.get("max_minutes") or None
    share = minutes / len(names) if minutes else None  # each stage keeps to its part
    tokenizer_dir = run / "tokenizer"
    if "tokenizer" in names:
        recipe.phases.append(
            Phase("tokenizer", _tokenizer(preset, base, data, tokenizer_dir, share, options))
        )
    if "transformer" in names:
        source = tokenizer_dir if "tokenizer" in names else base
        if source is None:
            raise PixelsceneError(f"stage {stage} needs a base model whose tokenizer to train on")
        if init is None and preset is None and base is not None:
            has_own = (base / "transformer.safetensors").is_file()
            init = base if has_own else None
        config: str | Path = preset or (base if base is not None else DEFAULT_PRESET)
        request_ = TransformerRequest(
            data_dir=data, vqgan_dir=source, out_dir=run / "model", config=config,
            init_from=init, max_minutes=share, **options,
        )  # fmt: skip
        recipe.phases.append(Phase("transformer", request_))
    return recipe


def _tokenizer(
    preset: str | None,
    base: Path | None,
    data: Path,
    out: Path,
    minutes: float | None,
    options: dict[str, Any],
) -> StageRequest:
    """The tokenizer stage: a new one from the preset, or a fine-tune of the base's."""
    from pixelscene.image_tokenizers import tokenizer_kind

    common = {"out_dir": out, "max_minutes": minutes, **options}
    if base is not None and tokenizer_kind(base) == "vqgan":
        return DecoderRequest(model_dir=base, data_dir=data, **common)
    config = preset or (base if base is not None else DEFAULT_PRESET)
    if base is not None or _preset_kind(config) == "categorical":
        return TokenizerRequest(data_dirs=[data], config=config, init_from=base, **common)
    return VqganRequest(data_dir=data, config=config, **common)


def _preset_kind(config: str | Path) -> str:
    from pixelscene.config import load_config

    return "categorical" if load_config(config).image_tokenizer == "categorical" else "vqgan"


def resolve_preset(request: dict[str, Any], presets: dict[str, str]) -> dict[str, Any]:
    """The request with a server preset's name replaced by its YAML file."""
    out = dict(request)
    for key in ("preset", "config"):
        if out.get(key) in presets:
            out[key] = presets[out[key]]
    return out


# ---------------------------------------------------------------------------- the dataset


def dataset_folder(ctx: context.WorkerContext, name: str) -> Path:
    """An uploaded dataset (fetched from the API by a worker without the object directory),
    or a folder of the older `datasets_dir`."""
    from workers.jobstore.datasets import DatasetNotFoundError

    try:
        from workers.datasets import fetch_dataset

        return fetch_dataset(ctx.settings, name)
    except DatasetNotFoundError:
        pass
    legacy = Path(ctx.settings.datasets_dir) / name
    if legacy.is_dir():
        return legacy
    raise DatasetMissing(f"no dataset {name!r}: neither uploaded nor in the datasets folder")


def split_dataset(src: Path, dest: Path) -> tuple[Path, Path | None]:
    """(train, eval) folders of a dataset: a held-out part of its images (5%, 2 to 200,
    chosen by a hash of each name so it is stable) and the rest, as links. Below
    `SPLIT_FROM` images there is no held-out part: (src, None). A resumed job finds the split
    it made before."""
    train, held = dest / "train", dest / "eval"
    if (dest / "split.json").is_file():
        counts = json.loads((dest / "split.json").read_text())
        return (train, held) if counts["eval"] else (src, None)
    image_dir = src / "images"
    names = sorted(
        p.name for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
    ) if image_dir.is_dir() else []  # fmt: skip
    n_eval = 0
    if len(names) >= SPLIT_FROM:
        n_eval = min(EVAL_MAX, max(EVAL_MIN, round(len(names) * EVAL_FRACTION)))
    by_hash = sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    held_out = set(by_hash[:n_eval])
    if n_eval:
        shutil.rmtree(dest, ignore_errors=True)  # a split a crash left half made
        _link_split(src, train, [n for n in names if n not in held_out], bad_lines=True)
        _link_split(src, held, [n for n in names if n in held_out], bad_lines=False)
    dest.mkdir(parents=True, exist_ok=True)
    write_json_atomic(dest / "split.json", {"train": len(names) - n_eval, "eval": n_eval})
    return (train, held) if n_eval else (src, None)


def _link_split(src: Path, folder: Path, names: list[str], bad_lines: bool) -> None:
    """A dataset folder of `names`: linked images, their caption lines (and with
    `bad_lines` the lines naming no image, for the trainer to report), the other files."""
    (folder / "images").mkdir(parents=True)
    for name in names:
        os.symlink((src / "images" / name).resolve(), folder / "images" / name)
    wanted = set(names)
    lines = []
    captions = src / "captions.jsonl"
    for line in captions.read_text(encoding="utf-8").splitlines() if captions.is_file() else []:
        try:
            image = json.loads(line).get("image")
        except (ValueError, AttributeError):
            image = None
        if (image is None and bad_lines) or image in wanted:
            lines.append(line)
    (folder / "captions.jsonl").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    for item in src.iterdir():  # attributes, sprite masks, ...: as they are
        if item.name not in ("images", "captions.jsonl", "tokens.npz", "dataset.json"):
            os.symlink(item.resolve(), folder / item.name)


# ---------------------------------------------------------------------------- running it


class Reporter:
    """The hooks of a job's run: progress into its record (throttled), the latest sample
    grid into its folder, and its cancel flag as the stop request."""

    def __init__(
        self,
        ctx: context.WorkerContext,
        job_id: str,
        phases: list[str],
        previous: dict[str, Any] | None = None,
    ) -> None:
        self.ctx, self.job_id, self.keys = ctx, job_id, Keys(ctx.settings.key_prefix)
        # An earlier try's figures (its sample grid, its last evaluation) stand until replaced.
        self.doc: dict[str, Any] = {**(previous or {}), "phases": phases, "phase": phases[0]}
        self.index = 0
        self.canceled = False
        self._last = 0.0
        self._sample: tuple[Path, float] | None = None

    def start(self, index: int, resumed_from: int | None) -> None:
        self.index = index
        self.doc.update(phase=self.doc["phases"][index], resumed_from=resumed_from)
        self.save()

    def should_stop(self) -> bool:
        self.canceled = self.canceled or cancel_requested(self.ctx.redis, self.keys, self.job_id)
        return self.canceled

    def on_progress(self, p: loop.Progress) -> None:
        self.doc.update(
            step=p.step, total=p.total, losses={k: round(v, 5) for k, v in p.losses.items()},
            items_per_second=round(p.items_per_s, 2), unit=p.unit,
            eta_seconds=None if p.eta_s is None else round(p.eta_s, 1),
        )  # fmt: skip
        evaluated = p.eval is not None and p.eval.get("step") == p.step
        if p.eval is not None:
            self.doc["eval"] = p.eval
        if evaluated and p.sample is not None:
            self._keep_sample(p.sample, p.step)
        now = time.monotonic()
        if evaluated or now - self._last >= self.ctx.settings.progress_interval:
            self._last = now
            self.save()

    def save(self) -> None:
        step, total = self.doc.get("step") or 0, self.doc.get("total") or 1
        done = (self.index + min(step / max(total, 1), 1.0)) / len(self.doc["phases"])
        self.ctx.redis.hset(
            self.keys.job(self.job_id),
            mapping=encode_fields({"training": self.doc, "progress": round(0.99 * done, 4)}),
        )

    def _keep_sample(self, path: Path, step: int) -> None:
        mark = (path, path.stat().st_mtime)
        if mark == self._sample:
            return
        self._sample = mark
        target = sample_path(self.ctx.settings.objects_dir, self.job_id)
        from pixelscene.model_io import atomic_write_bytes

        atomic_write_bytes(target, path.read_bytes())
        if self.ctx.settings.results_url:
            from workers import results

            s = self.ctx.settings
            results.upload(s, self.job_id, self.ctx.worker_name, [target.name], keep=True)
        self.doc["sample_at"] = [self.doc["phase"], step]


@dataclass
class Outcome:
    """How a job's run ended: every phase done, or stopped (canceled or a signal)."""

    summaries: dict[str, dict[str, Any]]
    stopped_at: int | None = None
    canceled: bool = False


def run_recipe(recipe: Recipe, reporter: Reporter, run: Path) -> Outcome:
    """Run the phases not yet done, each resuming from its checkpoint if it has one."""
    done_file = run / "phases.json"
    summaries = json.loads(done_file.read_text()) if done_file.is_file() else {}
    for index, phase in enumerate(recipe.phases):
        if phase.name in summaries:
            continue
        if summaries and reporter.should_stop():  # canceled between two phases
            last = summaries[recipe.phases[index - 1].name]["step"]
            return Outcome(summaries, stopped_at=last, canceled=True)
        request = phase.request
        resume = (phase.checkpoint / "meta.json").is_file()
        resumed_from = None
        if resume:
            from pixelscene.train.common import read_checkpoint_meta

            resumed_from = int(read_checkpoint_meta(phase.checkpoint)["step"])
            request = _resumed(request)
        reporter.start(index, resumed_from)
        log.info("training phase %s: %s", phase.name, request.describe())
        hooks = loop.Hooks(should_stop=reporter.should_stop, on_progress=reporter.on_progress)
        with loop.listening(hooks):
            summary = result_summary(run_stage(request, progress=False))
        if summary["interrupted"]:
            return Outcome(summaries, stopped_at=summary["step"], canceled=reporter.canceled)
        summaries[phase.name] = summary
        write_json_atomic(done_file, summaries)
    return Outcome(summaries)


def _resumed(request: StageRequest) -> StageRequest:
    """The request that continues its checkpoint: the run's own config and weights, so no
    starting model (`init_from` is for a new run only)."""
    from dataclasses import replace

    changes: dict[str, Any] = {"resume": True}
    if isinstance(request, TransformerRequest | TokenizerRequest):
        changes["init_from"] = None
    return replace(request, **changes)


def version_doc(
    job_id: str, request: dict[str, Any], recipe: Recipe, outcome: Outcome
) -> dict[str, Any]:
    """What a version's record says of how it was made (`models.register` adds the rest)."""
    steps = {name: s["step"] for name, s in outcome.summaries.items()}
    return {
        "job_id": job_id,
        "stage": request["stage"],
        "preset": request.get("preset") or request.get("config"),
        "dataset": request["dataset"],
        "base_model": request.get("base_model") or request.get("vqgan"),
        "steps": steps,
        "metrics": {name: s.get("eval") for name, s in outcome.summaries.items()},
        "generates": (recipe.model_dir / "transformer.safetensors").is_file(),
        "request": {k: v for k, v in request.items() if k != "webhook"},
    }


def stage_model(recipe: Recipe, export: Path, name: str) -> str:
    """Copy the run's model files into `export`, named `name` in its config; returns its
    content version."""
    from pixelscene.model_io import atomic_write_bytes, model_version

    shutil.rmtree(export, ignore_errors=True)
    export.mkdir(parents=True)
    for item in recipe.model_dir.iterdir():
        if item.is_file() and models.MODEL_FILES.fullmatch(item.name):
            shutil.copyfile(item, export / item.name)
    config = json.loads((export / "config.json").read_text())
    config["name"] = name
    atomic_write_bytes(export / "config.json", json.dumps(config, indent=2).encode())
    return model_version(export)
