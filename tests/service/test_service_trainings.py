"""Trainings that become model versions: a real redis-server, real `pixelscene worker`
processes running the real trainers on the micro preset and a 12-image dataset, and the API.

End to end: a training through the API registers `studio@1`, a later generation uses it
(the worker loads it without a restart); a fine-tune of it becomes `studio@2`; a training
whose worker is killed resumes from its checkpoint and a cancel stops it there; a worker
without the object directory hands its model to the API, and another fetches it to
generate; a `generate` worker never takes a training.
"""

from __future__ import annotations

import json
import shutil
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from service_fakes import wait_for

from service import create_app

pytestmark = pytest.mark.integration

DATASET = "5a1d0c0ffee0123456789abcdef01234"  # an uploaded dataset's id
MICRO = {
    "name": "micro",
    "vqgan": {
        "hidden_channels": 8, "channel_multipliers": [1, 1, 2, 2], "num_res_blocks": 1,
        "codebook_size": 32, "codebook_dim": 8, "patch_size": 4, "disc_channels": 8,
        "disc_layers": 2,
    },
    "transformer": {
        "embed_dim": 32, "num_heads": 2, "num_layers": 2, "text_encoder": "learned",
        "text_embed_dim": 32, "text_num_heads": 2, "text_num_layers": 1, "max_text_len": 12,
        "text_vocab_size": 64, "dropout": 0.0,
    },
    "train_vqgan": {
        "batch_size": 2, "crop_size": 32, "steps": 6, "warmup_steps": 2, "disc_start": 4,
        "eval_images": 2, "log_every": 1, "sample_every": 3, "eval_every": 3,
        "checkpoint_every": 2,
    },
    "train_transformer": {
        "batch_size": 4, "steps": 6, "warmup_steps": 2, "eval_every": 3, "checkpoint_every": 2,
        "log_every": 1,
    },
}  # fmt: skip
# The same model on a long schedule that checkpoints every 5 steps: one to kill and cancel.
SLOW = {**MICRO, "train_vqgan": {**MICRO["train_vqgan"], "steps": 20_000, "disc_start": 10**6,
        "checkpoint_every": 5, "eval_every": 10**6, "sample_every": 10**6}}  # fmt: skip
FINAL = ("succeeded", "failed", "canceled")


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The presets' YAML files and a 12-image dataset as `pixelscene synth` writes it."""
    from pixelscene.data.synth import write_dataset

    root = tmp_path_factory.mktemp("material")
    (root / "micro.yaml").write_text(yaml.safe_dump(MICRO))
    (root / "slow.yaml").write_text(yaml.safe_dump(SLOW))
    write_dataset(root / "dataset", 12, seed=3, captions=2)
    return {"micro": root / "micro.yaml", "slow": root / "slow.yaml", "dataset": root / "dataset"}


@pytest.fixture
def objects(tmp_path: Path, material: dict[str, Path]) -> Path:
    """The farm's object directory, holding the uploaded dataset."""
    folder = tmp_path / "objects" / "datasets" / DATASET
    shutil.copytree(material["dataset"], folder)
    (folder / "dataset.json").write_text(json.dumps({"id": DATASET, "images": 12}))
    return tmp_path / "objects"


@pytest.fixture
def presets(material: dict[str, Path]) -> str:
    return f"micro={material['micro']},slow={material['slow']}"


@pytest.fixture
def client(redis_server: Any, real_redis: Any, objects: Path, presets: str) -> Any:
    app = create_app(
        {"redis_url": redis_server.url, "objects_dir": str(objects), "presets": presets}
    )
    return app.test_client()


@pytest.fixture
def trainer_env(presets: str) -> dict[str, str]:
    return {"PIXELSCENE_PRESETS": presets, "PIXELSCENE_MODEL_CACHE_SIZE": "1"}


def post(client: Any, path: str, body: dict[str, Any], headers: Any = None) -> str:
    resp = client.post(path, json=body, headers=headers or {})
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()["id"]


def job(client: Any, job_id: str, headers: Any = None) -> dict[str, Any]:
    return client.get(f"/v1/jobs/{job_id}", headers=headers or {}).get_json()


def train(client: Any, headers: Any = None, **body: Any) -> str:
    """Queue a training on the uploaded dataset; returns its id."""
    return post(client, "/v1/trainings", {"dataset": DATASET, **body}, headers)


def wait_final(client: Any, job_id: str, headers: Any = None, timeout: float = 120) -> dict:
    return wait_for(lambda: (j := job(client, job_id, headers))["status"] in FINAL and j, timeout)


def test_a_training_becomes_a_version_that_a_later_generation_uses(
    client, farm, objects, trainer_env
):
    farm.spawn("w-1", env=trainer_env)
    training = train(client, stage="all", preset="micro", name="studio")
    done = wait_final(client, training)
    assert done["status"] == "succeeded", done
    assert done["output"]["model"] == "studio@1"
    assert done["output"]["steps"] == {"tokenizer": 6, "transformer": 6}
    progress = done["training"]
    assert progress["phases"] == ["tokenizer", "transformer"] and progress["phase"] == "transformer"
    assert progress["step"] == progress["total"] == 6 and progress["unit"] == "tokens"
    assert progress["items_per_second"] > 0 and "loss" in progress["losses"]
    assert progress["eval"]["step"] == 6 and progress["eval"]["eval_loss"] > 0  # held out
    assert "phase=transformer&step=6" in progress["sample_url"]  # the transformer's grid
    with client.get(progress["sample_url"]) as grid:
        assert grid.status_code == 200
        width, height = Image.open(BytesIO(grid.get_data())).size
        assert (width, height) == (2 * 320, 2 * 200)  # 2 held-out images over samples

    listed = {m["name"]: m for m in client.get("/v1/models").get_json()["models"]}
    assert listed["tiny"]["bundled"] and listed["tiny"]["versions"] == []
    studio = listed["studio"]
    assert (studio["latest"], studio["available"], studio["bundled"]) == (1, True, False)
    (first,) = studio["versions"]
    assert first["dataset"] == DATASET and first["job_id"] == training and first["generates"]
    assert (
        first["metrics"]["tokenizer"]["psnr"] > 0 and first["metrics"]["transformer"]["eval_loss"]
    )
    folder = objects / "models" / "studio" / "1"
    assert {"config.json", "vqgan.safetensors", "transformer.safetensors", "MODEL_CARD.md",
            "version.json"} <= {p.name for p in folder.iterdir()}  # fmt: skip
    card = (folder / "MODEL_CARD.md").read_text()
    assert "# studio version 1" in card and DATASET in card and "eval_loss" in card

    # The same worker, never restarted, generates with the version trained after it started.
    generation = post(
        client, "/v1/generations", {"prompt": "a castle at sunset", "model": "studio"}
    )
    assert job(client, generation)["request"]["model"] == "studio@1"  # pinned when queued
    made = wait_final(client, generation)
    assert made["status"] == "succeeded", made
    assert made["output"]["model_version"] == first["content_version"]

    # A fine-tune of it: its own transformer (no preset), 2 steps, becomes version 2.
    tune = train(client, stage="transformer", base_model="studio", steps=2, name="studio")
    assert job(client, tune)["request"]["base_model"] == "studio@1"
    tuned = wait_final(client, tune)
    assert tuned["status"] == "succeeded" and tuned["output"]["model"] == "studio@2", tuned
    second = client.get("/v1/models/studio/2").get_json()
    assert (second["base_model"], second["steps"]) == ("studio@1", {"transformer": 2})
    assert second["content_version"] != first["content_version"]
    newest = post(client, "/v1/generations", {"prompt": "a tower", "model": "studio"})
    older = post(client, "/v1/generations", {"prompt": "a tower", "model": "studio@1"})
    versions = [wait_final(client, j)["output"]["model_version"] for j in (newest, older)]
    assert versions == [second["content_version"], first["content_version"]]


@pytest.mark.slow
def test_a_studio_adapts_the_bundled_model(client, farm, trainer_env):
    """The common case: the bundled model's decoder, then its transformer (with its frozen
    sentence encoder), fine-tuned on the studio's art; one step each, then generating."""
    farm.spawn("w-1", env={**trainer_env, "PIXELSCENE_MODELS": "tiny="})
    tune = train(client, stage="all", base_model="tiny", steps=1, name="studio")
    done = wait_final(client, tune, timeout=180)
    assert done["status"] == "succeeded" and done["output"]["model"] == "studio@1", done
    version = client.get("/v1/models/studio/1").get_json()
    assert version["base_model"] == "tiny" and version["generates"]
    assert version["metrics"]["tokenizer"]["psnr"] > 15  # the bundled VQGAN's, barely moved
    generation = post(client, "/v1/generations", {"prompt": "a castle", "model": "studio"})
    assert wait_final(client, generation, timeout=180)["status"] == "succeeded"


def test_a_killed_training_resumes_from_its_checkpoint_and_a_cancel_stops_it(
    client, farm, objects, trainer_env
):
    farm.spawn("w-1", env=trainer_env)
    training = train(client, stage="tokenizer", preset="slow", name="slow")
    wait_for(lambda: (job(client, training)["training"].get("step") or 0) >= 12, 60)
    farm.kill("w-1")  # SIGKILL: no checkpoint on the way out
    checkpoint = objects / "jobs" / training / "run" / "tokenizer" / "checkpoint" / "meta.json"
    saved = json.loads(checkpoint.read_text())["step"]
    assert saved >= 10 and saved % 5 == 0

    farm.spawn("w-2", env=trainer_env)  # its reaper re-queues the job, then it takes it

    def resumed() -> dict[str, Any] | None:
        j = job(client, training)
        return j if j["attempts"] == 2 and j["training"]["resumed_from"] is not None else None

    again = wait_for(resumed, 60)
    assert again["status"] == "running" and again["training"]["resumed_from"] == saved

    resp = client.delete(f"/v1/jobs/{training}")
    assert resp.status_code == 202 and resp.get_json()["cancel_requested"]
    ended = wait_final(client, training)
    assert ended["status"] == "canceled", ended
    stopped = ended["training"]["stopped_at"]
    assert stopped > saved and ended["output"]["stopped_at"] == stopped
    assert json.loads(checkpoint.read_text())["step"] == stopped  # checkpointed at the stop
    names = [m["name"] for m in client.get("/v1/models").get_json()["models"]]
    assert "slow" not in names  # a canceled training registers nothing


def test_a_generate_worker_never_takes_a_training(client, fake_farm, real_redis):
    fake_farm.spawn("w-gen", queues="generate")
    training = train(client, stage="tokenizer", name="x")
    generation = post(client, "/v1/generations", {"prompt": "a mill"})
    assert wait_final(client, generation)["status"] == "succeeded"
    after = job(client, training)
    assert after["status"] == "queued" and after["attempts"] == 0 and after["position"] == 0


def test_workers_without_the_object_directory_register_and_fetch_versions(
    serve, redis_server, real_redis, farm, objects, presets, tmp_path, trainer_env
):
    app = create_app(
        {
            "redis_url": redis_server.url, "objects_dir": str(objects), "presets": presets,
            "admin_keys": ["admin"], "worker_keys": ["wk"],
        }
    )  # fmt: skip
    client, url = app.test_client(), serve(app)
    admin = {"Authorization": "Bearer admin"}
    remote = {"PIXELSCENE_RESULTS_URL": url, "PIXELSCENE_WORKER_KEY": "wk", **trainer_env}
    farm.spawn(
        "mini-1", queues="train", env={**remote, "PIXELSCENE_OBJECTS_DIR": str(tmp_path / "m1")}
    )
    training = train(client, admin, stage="all", preset="micro", name="studio")
    done = wait_final(client, training, admin)
    assert done["status"] == "succeeded" and done["output"]["model"] == "studio@1", done
    folder = objects / "models" / "studio" / "1"  # on the API's disk, from the worker
    record = json.loads((folder / "version.json").read_text())
    assert record["job_id"] == training and set(record["files"]) >= {"vqgan.safetensors"}
    with client.get(done["training"]["sample_url"], headers=admin) as grid:  # uploaded
        assert grid.status_code == 200 and grid.mimetype == "image/png"
    assert not (tmp_path / "m1" / "models").exists()  # the worker registered nothing itself

    farm.spawn(
        "mini-2", queues="generate", env={**remote, "PIXELSCENE_OBJECTS_DIR": str(tmp_path / "m2")}
    )
    generation = post(
        client, "/v1/generations", {"prompt": "a lighthouse", "model": "studio"}, admin
    )
    made = wait_final(client, generation, admin)
    assert made["status"] == "succeeded", made
    assert made["output"]["model_version"] == record["content_version"]
    fetched = tmp_path / "m2" / "models" / "studio" / "1"
    for name in record["files"]:
        assert (fetched / name).read_bytes() == (folder / name).read_bytes()
