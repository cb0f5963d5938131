"""Model versions without workers: naming them (and the errors for names that do not
exist), listing and serving them, the rules for deleting one, registering, the workers'
registry and fetch, and the dataset split a training runs on. fakeredis and the Flask test
client; test_service_trainings.py trains real ones with real workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pixelscene.errors import ModelLoadError, PixelsceneError
from pixelscene.testing import make_random_model_dir
from workers.jobstore import models
from workers.jobstore.records import Keys, transition
from workers.registry import ModelRegistry
from workers.settings import Settings
from workers.training import split_dataset
from workers.versions import version_folder

JOB_A, JOB_B = "a" * 32, "b" * 32


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete micro model folder, as a training's export."""
    return make_random_model_dir(tmp_path_factory.mktemp("staged"))


@pytest.fixture
def objects(overrides: dict[str, Any]) -> Path:
    return Path(overrides["objects_dir"])


def register(objects: Path, staged: Path, name: str, job_id: str, generates: bool = True) -> dict:
    doc = {
        "job_id": job_id, "stage": "all", "preset": "micro", "dataset": "d",
        "base_model": None, "steps": {"transformer": 4}, "content_version": f"cv-{job_id[:4]}",
        "metrics": {"transformer": {"step": 4, "eval_loss": 3.2}}, "generates": generates,
        "request": {"stage": "all", "dataset": "d", "name": name},
    }  # fmt: skip
    return models.register(objects, name, staged, doc)


def problem(resp: Any) -> tuple[int, str, str]:
    error = resp.get_json()["error"]
    fields = (error["details"] or {}).get("fields", {})
    return resp.status_code, error["code"], " ".join(fields.values())


def test_a_generation_names_a_model_or_a_version_and_unknown_ones_are_422(client, objects, staged):
    register(objects, staged, "studio", JOB_A)
    register(objects, staged, "tok", JOB_B, generates=False)

    def generate(model: str) -> Any:
        return client.post("/v1/generations", json={"prompt": "a mill", "model": model})

    queued = generate("studio")
    assert queued.status_code == 202
    job = client.get(f"/v1/jobs/{queued.get_json()['id']}").get_json()
    assert job["request"]["model"] == "studio@1"  # pinned to the newest when queued
    assert generate("studio@1").status_code == 202 and generate("tiny").status_code == 202
    status, code, message = problem(generate("studio@7"))
    assert (status, code) == (422, "unknown_model") and "no version 7 (versions: 1)" in message
    assert "models: studio, tiny, tok" in problem(generate("nope"))[2]
    assert "bundled model without numbered versions" in problem(generate("tiny@1"))[2]
    assert "cannot generate" in problem(generate("tok"))[2]
    assert problem(generate("no pe"))[:2] == (400, "invalid_request")  # not a name at all
    train = {"stage": "transformer", "dataset": "d", "name": "x", "base_model": "nope@2"}
    assert problem(client.post("/v1/trainings", json=train))[:2] == (422, "unknown_model")
    train = {"stage": "tokenizer", "dataset": "d", "name": "tiny"}
    status, code, message = problem(client.post("/v1/trainings", json=train))
    assert (status, code) == (422, "model_name_taken") and "bundled model's name" in message
    train = {"stage": "tokenizer", "dataset": "f" * 32, "name": "x"}  # an id, not uploaded
    assert problem(client.post("/v1/trainings", json=train)) == (
        422, "unknown_dataset", f"no uploaded dataset {'f' * 32}"
    )  # fmt: skip
    train = {"stage": "transformer", "dataset": "d", "name": "x", "base_model": "tok"}
    resp = client.post("/v1/trainings", json=train)  # a tokenizer-only version is a fine base
    assert resp.status_code == 202
    job = client.get(f"/v1/jobs/{resp.get_json()['id']}").get_json()
    assert job["request"]["base_model"] == "tok@1"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"stage": "all"}, "name", "is required for stage all"),
        ({"stage": "tokenizer"}, "name", "is required for stage tokenizer"),
        ({"stage": "vqgan", "base_model": "m"}, "name", "is required with base_model"),
        ({"stage": "transformer", "base_model": "m", "name": "n", "vqgan": "tiny"}, "vqgan",
         "is the older form of base_model: give one of them"),
        ({"stage": "tokenizer", "name": "n", "preset": "tiny", "config": "tiny"}, "config",
         "is the older name of preset: give one of them"),
    ],
)  # fmt: skip
def test_training_rules_name_the_field_to_change(client, body, field, message):
    resp = client.post("/v1/trainings", json={"dataset": "d", **body})
    assert resp.status_code == 400
    assert resp.get_json()["error"]["details"]["fields"] == {field: message}


def test_versions_are_listed_and_served_without_server_paths(client, objects, staged):
    register(objects, staged, "studio", JOB_A)
    register(objects, staged, "studio", JOB_B)
    half = objects / "models" / "half" / "1"  # a registration that died half-way
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")
    listed = {m["name"]: m for m in client.get("/v1/models").get_json()["models"]}
    assert sorted(listed) == ["studio", "tiny"]
    studio = listed["studio"]
    assert [v["version"] for v in studio["versions"]] == [1, 2] and studio["latest"] == 2
    assert studio["version"] == "cv-bbbb" and studio["versions"][0]["metrics"] == {
        "transformer": {"step": 4, "eval_loss": 3.2}
    }
    one = client.get("/v1/models/studio/1").get_json()
    assert one["ref"] == "studio@1" and one["job_id"] == JOB_A and str(objects) not in str(one)
    assert "transformer.safetensors" in one["files"]
    with client.get("/v1/models/studio/1/files/transformer.safetensors") as resp:
        assert resp.status_code == 200
        assert resp.get_data() == (staged / "transformer.safetensors").read_bytes()
    with client.get("/v1/models/studio/1/files/MODEL_CARD.md") as resp:
        assert "# studio version 1" in resp.get_data(as_text=True)
    for path in ("/v1/models/studio/3", "/v1/models/half/1", "/v1/models/tiny/1",
                 "/v1/models/studio/1/files/checkpoint", "/v1/models/studio/0",
                 "/v1/models/studio/1/files/..%2Fversion.json"):  # fmt: skip
        assert client.get(path).status_code == 404, path


def test_a_version_is_deleted_only_while_no_queued_or_running_job_names_it(
    client, fake_redis, objects, staged
):
    register(objects, staged, "studio", JOB_A)
    folder = objects / "models" / "studio" / "1"
    ids = [
        client.post("/v1/generations", json={"prompt": "a", "model": "studio@1"}).get_json()["id"],
        client.post(
            "/v1/trainings",
            json={"stage": "transformer", "dataset": "d", "base_model": "studio", "name": "b"},
        ).get_json()["id"],
    ]
    assert transition(fake_redis, Keys(), ids[0], ("queued",), "running", worker="w")
    for blocker in list(ids):  # the running generation, then the queued training
        resp = client.delete("/v1/models/studio/1")
        assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "model_in_use"
        assert sorted(resp.get_json()["error"]["details"]["jobs"]) == sorted(ids)
        assert models.read_version(folder) is not None  # put back as it was
        transition(fake_redis, Keys(), blocker, ("queued", "running"), "succeeded")
        ids.remove(blocker)
    assert client.delete("/v1/models/studio/1").status_code == 204
    assert not folder.exists() and client.get("/v1/models/studio/1").status_code == 404
    assert "studio" not in [m["name"] for m in client.get("/v1/models").get_json()["models"]]
    resp = client.post("/v1/generations", json={"prompt": "a", "model": "studio@1"})
    assert resp.status_code == 422
    assert problem(client.delete("/v1/models/tiny/1"))[:2] == (409, "bundled_model")
    assert client.delete("/v1/models/studio/1").status_code == 404


def test_deleting_a_version_needs_an_admin_key(make_app, objects, staged):
    register(objects, staged, "studio", JOB_A)
    keyed = make_app(api_keys=["gen"], admin_keys=["adm"], worker_keys=["wk"]).test_client()
    for key in ("gen", "wk"):
        resp = keyed.delete("/v1/models/studio/1", headers={"Authorization": f"Bearer {key}"})
        assert resp.status_code == 403
    wk = {"Authorization": "Bearer wk"}  # a worker key may read a version's files
    with keyed.get("/v1/models/studio/1/files/config.json", headers=wk) as resp:
        assert resp.status_code == 200
    assert keyed.get("/v1/models", headers=wk).status_code == 403


def test_a_job_registers_one_version_and_numbers_skip_half_written_ones(tmp_path, staged):
    first = register(tmp_path, staged, "studio", JOB_A)
    assert register(tmp_path, staged, "studio", JOB_A) == first  # a retry of the same job
    (tmp_path / "models" / "studio" / "2").mkdir()  # a registration that died half-way
    second = register(tmp_path, staged, "studio", JOB_B)
    assert (first["version"], second["version"]) == (1, 3)
    assert [d["version"] for d in models.versions(tmp_path, "studio")] == [1, 3]
    assert first["files"]["config.json"]["bytes"] == (staged / "config.json").stat().st_size
    assert models.resolve(tmp_path, ["tiny"], "studio").ref == "studio@3"
    with pytest.raises(PixelsceneError, match="no config.json"):
        models.register(tmp_path, "other", tmp_path / "models", {"job_id": "c" * 32})
    with pytest.raises(models.ModelNotFoundError):
        models.version_dir(tmp_path, "../etc", 1)


def test_the_registry_loads_new_versions_on_first_use_and_stays_bounded(tmp_path):
    loads: list[Path | None] = []

    def resolver(ref: str) -> Path:
        if not ref.startswith("studio@"):
            raise ModelLoadError(f"no model {ref}")
        return tmp_path / ref

    registry = ModelRegistry(
        {"tiny": ""}, capacity=2, loader=lambda folder: loads.append(folder) or folder,
        versioner=lambda folder: str(folder), resolver=resolver,
    )  # fmt: skip
    for ref in ("studio@1", "studio@2", "studio@1", "tiny", "studio@3", "studio@1"):
        registry.get(ref)
        assert len(registry.loaded_versions()) <= 2
    assert loads == [tmp_path / "studio@1", tmp_path / "studio@2", None, tmp_path / "studio@3",
                     tmp_path / "studio@1"]  # fmt: skip
    with pytest.raises(ModelLoadError, match="no model other@1"):
        registry.get("other@1")


def test_a_worker_fetches_a_version_it_lacks_and_refuses_a_damaged_one(
    make_app, serve, objects, staged, tmp_path
):
    url = serve(make_app(admin_keys=["adm"], worker_keys=["wk"]))
    register(objects, staged, "studio", JOB_A)
    register(objects, staged, "studio", JOB_B)
    mini = Settings.load(
        {"objects_dir": str(tmp_path / "mini"), "results_url": url, "worker_key": "wk"}
    )
    folder = version_folder(mini, "studio@1")
    assert folder == tmp_path / "mini" / "models" / "studio" / "1"
    for name in ("config.json", "vqgan.safetensors", "transformer.safetensors"):
        assert (folder / name).read_bytes() == (objects / "models/studio/1" / name).read_bytes()
    assert models.read_version(folder)["job_id"] == JOB_A
    assert version_folder(mini, "studio@1") == folder  # a copy, kept for the next job
    served_file = objects / "models" / "studio" / "2" / "vqgan.safetensors"
    served_file.write_bytes(served_file.read_bytes()[:-8])
    with pytest.raises(ModelLoadError, match="damaged"):
        version_folder(mini, "studio@2")
    assert sorted(p.name for p in folder.parent.iterdir()) == ["1"]  # nothing half-fetched
    with pytest.raises(ModelLoadError, match="could not fetch"):
        version_folder(mini, "studio@9")
    alone = Settings.load({"objects_dir": str(tmp_path / "alone")})
    with pytest.raises(ModelLoadError, match="not in the object directory"):
        version_folder(alone, "studio@1")


def test_only_the_training_running_on_a_worker_hands_over_its_model(
    make_app, fake_redis, objects, staged
):
    client = make_app(admin_keys=["adm"], worker_keys=["wk"]).test_client()
    admin, wk = {"Authorization": "Bearer adm"}, {"Authorization": "Bearer wk"}
    body = {"stage": "tokenizer", "dataset": "d", "name": "studio"}
    job_id = client.post("/v1/trainings", json=body, headers=admin).get_json()["id"]
    here = {**wk, "X-Pixelscene-Worker": "w-1"}

    def put(name: str, headers: dict[str, str] = here) -> int:
        path = f"/v1/internal/jobs/{job_id}/model/{name}"
        return client.put(path, data=b"{}", headers=headers).status_code

    assert put("config.json") == 409  # still queued
    assert transition(fake_redis, Keys(), job_id, ("queued",), "running", worker="w-1")
    assert put("config.json", {**wk, "X-Pixelscene-Worker": "w-2"}) == 409
    assert put("checkpoint.json") == 400 and put("..%2Fx.safetensors") in (400, 404)
    for path in sorted(staged.iterdir()):
        resp = client.put(f"/v1/internal/jobs/{job_id}/model/{path.name}",
                          data=path.read_bytes(), headers=here)  # fmt: skip
        assert resp.status_code == 204, path.name
    doc = {"stage": "tokenizer", "generates": True, "content_version": "cv", "job_id": "forged"}
    first = client.post(f"/v1/internal/jobs/{job_id}/model", json=doc, headers=here)
    assert first.status_code == 201 and first.get_json()["ref"] == "studio@1"
    assert first.get_json()["job_id"] == job_id  # the API's, not what the worker said
    again = client.post(f"/v1/internal/jobs/{job_id}/model", json=doc, headers=here)
    assert again.get_json()["version"] == 1  # a retried registration registers once
    stored = objects / "models" / "studio" / "1"
    assert (stored / "vqgan.safetensors").read_bytes() == (
        staged / "vqgan.safetensors"
    ).read_bytes()


def test_a_dataset_split_holds_out_images_by_name_and_stays_put(tmp_path):
    from pixelscene.data.datasets import CaptionDataset
    from pixelscene.data.synth import write_dataset

    src = tmp_path / "d"
    write_dataset(src, 12, seed=1, captions=2)
    with (src / "captions.jsonl").open("a") as f:
        f.write("not json\n")
    train, held = split_dataset(src, tmp_path / "split")
    assert held is not None
    train_set, held_set = CaptionDataset(train), CaptionDataset(held)
    assert (len(train_set.images()), len(held_set.images())) == (10, 2)
    assert not set(train_set.images()) & set(held_set.images())
    assert len(held_set) == 4 and (train / "attributes.jsonl").is_file()  # 2 captions each
    # a bad line stays with the training part, for the trainer to report with its line
    assert [p.split(": ", 1)[1] for p in train_set.problems] == ["malformed JSON (Expecting value)"]
    assert train_set.problems[0].startswith(f"{train}/captions.jsonl:") and not held_set.problems
    assert split_dataset(src, tmp_path / "split") == (train, held)  # a retry: the same split
    assert json.loads((tmp_path / "split" / "split.json").read_text()) == {"train": 10, "eval": 2}
    small = tmp_path / "small"
    write_dataset(small, 4, seed=1, captions=1)
    assert split_dataset(small, tmp_path / "split-small") == (small, None)  # too few to hold out
