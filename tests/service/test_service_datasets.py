"""Dataset uploads: the object-directory layout, the safe unpacking and the /v1/datasets API."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from pixelscene.data.datasets import CaptionDataset, ImageDataset
from workers.datasets import fetch_dataset
from workers.jobstore.archives import ArchiveError
from workers.jobstore.datasets import DatasetNotFoundError, dataset_dir, upload_folder
from workers.jobstore.queues import TRAIN, enqueue_job
from workers.jobstore.records import Keys, transition
from workers.results import ResultsError
from workers.settings import Settings

DATASET_ID = "0123456789abcdef0123456789abcdef"
ZIP = {"Content-Type": "application/zip"}
GZIP = {"Content-Type": "application/gzip"}


def png(size: tuple[int, int] = (320, 200), shade: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (shade, 80, 160)).save(buf, format="PNG")
    return buf.getvalue()


def caption_lines(*rows: Any) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def good_files(n: int = 3) -> dict[str, bytes]:
    """A small dataset as `pixelscene synth` lays it out."""
    files = {f"images/{i:06d}.png": png(shade=40 * i) for i in range(n)}
    rows = [{"image": f"{i:06d}.png", "caption": f"a castle number {i}"} for i in range(n)]
    files["captions.jsonl"] = caption_lines(*rows)
    return files


def zip_of(files: dict[str, bytes], prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return buf.getvalue()


def tar_of(members: list[tarfile.TarInfo | tuple[str, bytes]], gz: bool = True) -> bytes:
    """A tar(.gz) of (name, bytes) files and ready-made TarInfo entries (links, devices)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
    return buf.getvalue()


def entry(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def zip_with_mode(name: str, mode: int, data: bytes = b"target") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("images/000000.png", png())
        info = zipfile.ZipInfo(name)
        info.create_system = 3  # Unix, so the mode bits count
        info.external_attr = mode << 16
        zf.writestr(info, data)
    return buf.getvalue()


def understated_zip() -> bytes:
    """A zip whose headers say its member holds 10 bytes; it holds 200000."""
    data = bytearray(zip_of({"images/big.png": b"\0" * 200_000}))
    real = (200_000).to_bytes(4, "little")
    for at in (data.find(b"PK\x03\x04") + 22, data.find(b"PK\x01\x02") + 24):
        assert data[at : at + 4] == real
        data[at : at + 4] = (10).to_bytes(4, "little")
    return bytes(data)


def encrypted_zip() -> bytes:
    """A zip whose member says it is encrypted (general purpose flag bit 0)."""
    data = bytearray(zip_of({"images/secret.png": png()}))
    for at in (data.find(b"PK\x03\x04") + 6, data.find(b"PK\x01\x02") + 8):
        data[at] |= 0x1
    return bytes(data)


def big_pax_header() -> bytes:
    """A tar.gz whose members declare 0 bytes but whose stream carries a 300 kB pax header."""
    info = tarfile.TarInfo("images/empty.png")
    info.pax_headers = {"comment": "x" * 300_000}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def datasets_left(objects: Path) -> list[str]:
    root = objects / "datasets"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


@pytest.fixture
def objects(overrides: dict[str, Any]) -> Path:
    return Path(overrides["objects_dir"])


@pytest.fixture
def small_client(make_app: Any) -> Any:
    """Limits small enough for tests: 100 kB unpacked and in the body, 10 members."""
    return make_app(dataset_max_bytes=100_000, dataset_max_members=10).test_client()


def upload(client: Any, body: bytes, headers: dict[str, str] = ZIP, **query: str) -> Any:
    return client.post("/v1/datasets", data=body, headers=headers, query_string=query)


# --- the job-store side: ids and folders ---


def test_dataset_dir_names_a_complete_dataset_folder(tmp_path: Path):
    settings = SimpleNamespace(objects_dir=str(tmp_path))
    folder = tmp_path / "datasets" / DATASET_ID
    folder.mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no dataset"):
        dataset_dir(settings, DATASET_ID)  # no dataset.json: not a complete upload
    (folder / "dataset.json").write_text(json.dumps({"id": DATASET_ID}))
    assert dataset_dir(settings, DATASET_ID) == folder


@pytest.mark.parametrize("bad", ["../etc", "0123456789ABCDEF0123456789ABCDEF", "", "x" * 32])
def test_dataset_dir_refuses_ids_that_could_name_another_path(tmp_path: Path, bad: str):
    with pytest.raises(DatasetNotFoundError, match="invalid dataset id"):
        dataset_dir(SimpleNamespace(objects_dir=str(tmp_path)), bad)


def test_only_stale_upload_and_delete_folders_are_swept(tmp_path: Path):
    settings = SimpleNamespace(objects_dir=str(tmp_path))
    root = tmp_path / "datasets"
    old = int(time.time()) - 2 * 86400
    stale = [root / f".incoming-{old}-x", root / f".deleting-{old}-{DATASET_ID}-y"]
    under_way = root / f".deleting-{int(time.time())}-{DATASET_ID}-z"
    for folder in (*stale, under_way, root / DATASET_ID):
        folder.mkdir(parents=True)
    os.utime(under_way, (old, old))  # a renamed dataset folder keeps its old times
    work = upload_folder(settings)
    assert sorted(p.name for p in root.iterdir()) == sorted([under_way.name, work.name, DATASET_ID])


# --- good uploads ---


def test_a_zip_becomes_a_dataset_every_trainer_reads(client: Any, objects: Path):
    resp = upload(client, zip_of(good_files(3)), name="castles")
    assert resp.status_code == 201, resp.get_json()
    doc = resp.get_json()
    assert (doc["images"], doc["captions"], doc["problems"], doc["name"]) == (3, 3, [], "castles")
    folder = dataset_dir(SimpleNamespace(objects_dir=str(objects)), doc["id"])
    assert folder == objects / "datasets" / doc["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["captions.jsonl", "dataset.json", "images"]
    pairs = CaptionDataset(folder, strict=True)
    assert len(pairs) == 3 and pairs[2][1] == "a castle number 2"
    assert len(ImageDataset(folder, resize=False, strict=True)) == 3
    record = json.loads((folder / "dataset.json").read_text())
    assert record["bytes"] == sum(len(v) for v in good_files(3).values())
    assert datasets_left(objects) == [doc["id"]]  # the upload's own folder is gone


def test_a_tar_gz_inside_one_top_level_folder(client: Any, objects: Path):
    files = [(f"mystyle/{name}", data) for name, data in good_files(2).items()]
    files += [("mystyle/attributes.jsonl", b'{"image": "000000.png"}\n')]
    files += [("__MACOSX/mystyle/._000000.png", b"finder"), ("mystyle/.DS_Store", b"finder")]
    resp = upload(client, tar_of(files), GZIP)
    assert resp.status_code == 201, resp.get_json()
    doc = resp.get_json()
    assert (doc["images"], doc["captions"], doc["problems"]) == (2, 2, [])
    assert doc["name"] == "mystyle"  # the folder's name, as none was given
    folder = objects / "datasets" / doc["id"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "attributes.jsonl", "captions.jsonl", "dataset.json", "images",
    ]  # fmt: skip


def test_a_multipart_upload(client: Any):
    form = {"file": (io.BytesIO(zip_of(good_files(2))), "art.zip"), "name": "art"}
    resp = client.post("/v1/datasets", data=form, content_type="multipart/form-data")
    assert resp.status_code == 201, resp.get_json()
    assert (resp.get_json()["images"], resp.get_json()["name"]) == (2, "art")
    no_file = client.post("/v1/datasets", data={"name": "x"}, content_type="multipart/form-data")
    assert no_file.status_code == 400 and "file" in no_file.get_json()["error"]["details"]["fields"]


def test_problems_name_the_file_and_line_and_what_was_left_out(client: Any, objects: Path):
    files = good_files(3)
    files["images/small.png"] = png((256, 256))
    files["images/broken.png"] = b"\x89PNG not really"
    files["images/notes.txt"] = b"todo"
    files["README.txt"] = b"hello"
    files["captions.jsonl"] = (
        caption_lines(
            {"image": "000000.png", "caption": ["a mill", "a mill at dusk"]},
            "{not json",
            {"image": "gone.png", "caption": "a tower"},
            {"image": "small.png", "caption": "a small tower"},
            {"image": "000001.png"},
            {"image": "000001.png", "caption": "a moor"},
        )
        + b'{"image": "000002.png", "caption": "caf\xe9"}\n'  # Latin-1, not UTF-8
    )
    resp = upload(client, zip_of(files, prefix="art/"))
    assert resp.status_code == 201, resp.get_json()
    doc = resp.get_json()
    assert (doc["images"], doc["captions"], doc["problem_count"]) == (3, 2, 10)
    problems = [(p["file"], p["line"], p["message"]) for p in doc["problems"]]
    assert [(f, line) for f, line, _ in problems] == [
        ("art/README.txt", None),
        ("art/images/broken.png", None),
        ("art/images/notes.txt", None),
        ("art/images/small.png", None),
        ("art/captions.jsonl", 2),
        ("art/captions.jsonl", 3),
        ("art/captions.jsonl", 4),
        ("art/captions.jsonl", 5),
        ("art/captions.jsonl", 7),
        ("art/images/000002.png", None),
    ]
    messages = [m for _, _, m in problems]
    assert "not part of a dataset" in messages[0]
    assert messages[1].startswith("unreadable image")
    assert messages[2].startswith("not an image file")
    assert messages[3] == "image is 256x256, expected 320x200; left out"
    assert messages[4].startswith("malformed JSON")
    assert "'gone.png' is not among the usable images" in messages[5]
    assert "'small.png' is not among the usable images" in messages[6]
    assert messages[7] == "missing key 'caption'; line left out"
    assert messages[8].startswith("not UTF-8 text") and messages[8].endswith("line left out")
    assert messages[9].startswith("no caption in captions.jsonl")
    folder = objects / "datasets" / doc["id"]
    assert sorted(p.name for p in (folder / "images").iterdir()) == [
        "000000.png", "000001.png", "000002.png",
    ]  # fmt: skip
    assert len(CaptionDataset(folder, strict=True)) == 3  # the kept lines all parse


# --- refused uploads ---


BAD_ARCHIVES = {
    "parent path": (zip_of({"images/000000.png": png(), "../evil.png": b"x"}), ZIP,
                    400, "unsafe_member", "../evil.png"),
    "nested parent path": (tar_of([("images/../../evil", b"x")]), GZIP,
                           400, "unsafe_member", "images/../../evil"),
    "absolute path": (zip_of({"/etc/evil": b"x"}), ZIP, 400, "unsafe_member", "/etc/evil"),
    "windows path": (zip_of({"C:\\evil": b"x"}), ZIP, 400, "unsafe_member", "C:\\evil"),
    "zip symlink": (zip_with_mode("images/link.png", stat.S_IFLNK | 0o777), ZIP,
                    400, "unsafe_member", "images/link.png"),
    "tar symlink": (tar_of([entry("images/a.png", tarfile.SYMTYPE, "/etc/passwd")]), GZIP,
                    400, "unsafe_member", "images/a.png"),
    "tar hard link": (tar_of([("images/a.png", png()), entry("images/b.png", tarfile.LNKTYPE,
                      "images/a.png")]), GZIP, 400, "unsafe_member", "images/b.png"),
    "tar device": (tar_of([entry("images/dev", tarfile.CHRTYPE)]), GZIP,
                   400, "unsafe_member", "images/dev"),
    "tar fifo": (tar_of([entry("images/fifo", tarfile.FIFOTYPE)]), GZIP,
                 400, "unsafe_member", "images/fifo"),
    "zip fifo": (zip_with_mode("images/fifo", stat.S_IFIFO | 0o644), ZIP,
                 400, "unsafe_member", "images/fifo"),
    "duplicate member": (tar_of([("images/a.png", png()), ("images/a.png", png())]), GZIP,
                         400, "unsafe_member", "images/a.png"),
    "encrypted member": (encrypted_zip(), ZIP, 400, "unsafe_member", "images/secret.png"),
    "declared zip bomb": (zip_of({"images/big.png": b"\0" * 200_000}), ZIP,
                          413, "archive_too_large", None),
    "declared tar bomb": (tar_of([("images/a.png", b"\0" * 60_000), ("images/b.png",
                          b"\0" * 60_000)]), GZIP, 413, "archive_too_large", "images/b.png"),
    "stream past the limit": (big_pax_header(), GZIP, 413, "archive_too_large", None),
    "understated zip sizes": (understated_zip(), ZIP, 400, "invalid_archive", "images/big.png"),
    "too many zip members": (zip_of({f"images/{i}.png": b"" for i in range(11)}), ZIP,
                             413, "archive_too_large", "images/10.png"),
    "too many tar members": (tar_of([(f"images/{i}.png", b"") for i in range(11)]), GZIP,
                             413, "archive_too_large", "images/10.png"),
    "not an archive": (b"these are not the bytes of an archive", ZIP,
                       400, "invalid_archive", None),
    "truncated zip": (zip_of(good_files(2))[:-30], ZIP, 400, "invalid_archive", None),
    "truncated tar.gz": (tar_of([("images/a.png", png())])[:-40], GZIP,
                         400, "invalid_archive", None),
    "no usable image": (zip_of({"images/a.png": png((64, 64)), "captions.jsonl": b""}), ZIP,
                        422, "empty_dataset", None),
}  # fmt: skip


@pytest.mark.parametrize("kind", BAD_ARCHIVES)
def test_bad_archives_are_refused_and_leave_nothing(small_client: Any, objects: Path, kind: str):
    body, headers, status, code, member = BAD_ARCHIVES[kind]
    resp = upload(small_client, body, headers)
    assert resp.status_code == status, resp.get_json()
    error = resp.get_json()["error"]
    assert error["code"] == code, error
    if code == "empty_dataset":
        assert error["details"]["problems"][0]["message"].startswith("image is 64x64")
    else:
        assert error["details"]["member"] == member, error
        if member is not None:
            assert repr(member) in error["message"]
    assert datasets_left(objects) == []
    assert not (objects.parent / "evil.png").exists() and not Path("/etc/evil").exists()


def test_a_body_over_the_limit_or_of_another_type_is_refused(small_client: Any, objects: Path):
    resp = upload(small_client, b"\0" * 100_001)
    assert (
        resp.status_code == 413
        and "PIXELSCENE_DATASET_MAX_BYTES" in resp.get_json()["error"]["message"]
    )
    resp = small_client.post("/v1/datasets", json={"archive": "no"})
    assert resp.status_code == 415 and resp.get_json()["error"]["code"] == "unsupported_media_type"
    resp = upload(small_client, zip_of(good_files(1)), name="../x")
    assert resp.status_code == 400 and "name" in resp.get_json()["error"]["details"]["fields"]
    assert datasets_left(objects) == []


# --- list, get, delete ---


def test_list_get_and_delete(client: Any, objects: Path):
    first = upload(client, zip_of(good_files(1)), name="one").get_json()
    second = upload(client, zip_of({**good_files(2), "x.txt": b"x"}), name="two").get_json()
    listed = client.get("/v1/datasets").get_json()["datasets"]
    assert [d["id"] for d in listed] == [second["id"], first["id"]]
    assert listed[0]["problem_count"] == 1 and "problems" not in listed[0]
    got = client.get(f"/v1/datasets/{second['id']}").get_json()
    assert got == second and got["problems"][0]["file"] == "x.txt"
    assert client.delete(f"/v1/datasets/{first['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{first['id']}").status_code == 404
    assert client.delete(f"/v1/datasets/{first['id']}").status_code == 404
    assert [d["id"] for d in client.get("/v1/datasets").get_json()["datasets"]] == [second["id"]]
    assert datasets_left(objects) == [second["id"]]
    assert client.get("/v1/datasets/..%2F..%2Fetc").status_code == 404


def test_delete_is_refused_while_a_queued_or_running_training_names_it(
    client: Any, app: Any, fake_redis: Any, objects: Path
):
    dataset = upload(client, zip_of(good_files(1))).get_json()["id"]
    settings = app.extensions["pixelscene"].settings
    keys = Keys(settings.key_prefix)
    enqueue_job(fake_redis, settings, "generate", "a" * 32, {"prompt": "x", "dataset": dataset})
    enqueue_job(fake_redis, settings, TRAIN, "b" * 32, {"stage": "vqgan", "dataset": "other"})
    enqueue_job(fake_redis, settings, TRAIN, "c" * 32, {"stage": "vqgan", "dataset": dataset})
    resp = client.delete(f"/v1/datasets/{dataset}")
    assert resp.status_code == 409, resp.get_json()
    assert resp.get_json()["error"]["details"] == {"jobs": ["c" * 32]}
    assert transition(fake_redis, keys, "c" * 32, ("queued",), "running")
    assert client.delete(f"/v1/datasets/{dataset}").status_code == 409
    assert dataset_dir(settings, dataset).is_dir()  # put back after the refusal
    assert transition(fake_redis, keys, "c" * 32, ("running",), "succeeded")
    assert client.delete(f"/v1/datasets/{dataset}").status_code == 204
    assert datasets_left(objects) == []


def test_datasets_need_an_admin_key(make_app: Any):
    client = make_app(admin_keys=["a"], api_keys=["g"], worker_keys=["w"]).test_client()
    for key, status in (("g", 403), ("w", 403), ("a", 200)):
        resp = client.get("/v1/datasets", headers={"Authorization": f"Bearer {key}"})
        assert resp.status_code == status, (key, resp.get_json())
    resp = upload(client, zip_of(good_files(1)), {**ZIP, "Authorization": "Bearer g"})
    assert resp.status_code == 403


# --- workers without the object directory ---


def test_a_remote_worker_fetches_a_dataset(
    make_app: Any, serve: Any, objects: Path, tmp_path: Path
):
    app = make_app(admin_keys=["admin"], worker_keys=["wk"])
    url = serve(app)
    client = app.test_client()
    headers = {**GZIP, "Authorization": "Bearer admin"}
    files = [(f"s/{n}", d) for n, d in good_files(3).items()] + [("s/x.txt", b"x")]
    dataset = upload(client, tar_of(files), headers).get_json()["id"]
    resp = client.get(
        f"/v1/internal/datasets/{dataset}/archive", headers={"Authorization": "Bearer wk"}
    )
    assert resp.status_code == 200 and resp.mimetype == "application/x-tar"
    local = tmp_path / "worker-objects"
    worker = Settings.load({"objects_dir": str(local), "results_url": url, "worker_key": "wk"})
    folder = fetch_dataset(worker, dataset)
    assert folder == local / "datasets" / dataset
    served_folder = objects / "datasets" / dataset
    names = sorted(str(p.relative_to(served_folder)) for p in served_folder.rglob("*"))
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == names
    assert "images/000002.png" in names and "dataset.json" in names
    for name in (n for n in names if (served_folder / n).is_file()):
        assert (folder / name).read_bytes() == (served_folder / name).read_bytes()
    assert len(CaptionDataset(folder, strict=True)) == 3
    assert datasets_left(local) == [dataset]  # no download folder left behind
    assert fetch_dataset(worker, dataset) == folder  # the copy serves the next training
    with pytest.raises(DatasetNotFoundError, match="on the API"):
        fetch_dataset(worker, "f" * 32)
    no_api = Settings.load({"objects_dir": str(tmp_path / "w2")})
    with pytest.raises(DatasetNotFoundError):
        fetch_dataset(no_api, dataset)


class Hostile(BaseHTTPRequestHandler):
    """An API that sends a tar with a link in it, or refuses the worker's key."""

    body = b""
    status = 200

    def do_GET(self):  # noqa: N802
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_fetched_archive_is_unpacked_as_carefully_as_an_upload(hostile: str, tmp_path: Path):
    worker = Settings.load(
        {"objects_dir": str(tmp_path), "results_url": hostile, "worker_key": "k"}
    )
    Hostile.status, Hostile.body = (
        200,
        tar_of(
            [("dataset.json", b"{}"), entry("images/a.png", tarfile.SYMTYPE, "/etc/passwd")],
            gz=False,
        ),
    )
    with pytest.raises(ArchiveError, match="images/a.png") as e:
        fetch_dataset(worker, DATASET_ID)
    assert e.value.code == "unsafe_member"
    assert datasets_left(tmp_path) == []
    Hostile.status, Hostile.body = 403, b'{"error": {"code": "forbidden", "message": "no"}}'
    with pytest.raises(ResultsError, match="403 forbidden") as refused:
        fetch_dataset(worker, DATASET_ID)
    assert refused.value.code == "results_refused" and datasets_left(tmp_path) == []


def test_the_archive_endpoint_is_for_worker_and_admin_keys(make_app: Any):
    client = make_app(admin_keys=["a"], api_keys=["g"], worker_keys=["w"]).test_client()
    dataset = upload(client, zip_of(good_files(1)), {**ZIP, "Authorization": "Bearer a"})
    path = f"/v1/internal/datasets/{dataset.get_json()['id']}/archive"
    for key, status in (("g", 403), ("w", 200), ("a", 200)):
        assert client.get(path, headers={"Authorization": f"Bearer {key}"}).status_code == status
    missing = client.get(
        f"/v1/internal/datasets/{'f' * 32}/archive", headers={"Authorization": "Bearer w"}
    )
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "dataset_not_found"


def test_bytes_are_counted_while_unpacking_whatever_the_header_said(tmp_path: Path):
    """The guard behind the declared sizes: a member that brings more than its header said
    is stopped at the limit (zipfile and tarfile stop short of this themselves today)."""
    from workers.jobstore.archives import _Writer

    writer = _Writer(tmp_path, max_bytes=100_000, max_members=10)
    writer.start("images/big.png")
    with pytest.raises(ArchiveError, match="counted while unpacking") as e:
        writer.file(10, io.BytesIO(b"\0" * 200_000))
    assert e.value.code == "archive_too_large" and writer.total <= 100_000 + 65_536


@pytest.mark.integration
def test_datasets_through_the_real_server(redis_server: Any, real_redis: Any, tmp_path: Path):
    """`pixelscene serve` (waitress) with a real redis-server: upload over HTTP, the limit,
    a delete refused while a training is queued, and a worker without the object
    directory fetching the dataset."""
    from test_service_farm import ADMIN, KEYS_ENV, WORKER, Api

    env = {**KEYS_ENV, "PIXELSCENE_DATASET_MAX_BYTES": "200000"}
    api = Api(redis_server.url, tmp_path / "objects", env, tmp_path / "api.log").start()
    try:
        zipped = {"Content-Type": "application/zip"}
        status, _, doc = api.call(
            "POST", "/v1/datasets?name=castles", zip_of(good_files(3)), ADMIN, zipped
        )
        assert status == 201 and (doc["images"], doc["name"]) == (3, "castles"), doc
        status, _, error = api.call("POST", "/v1/datasets", b"\0" * 300_000, ADMIN, zipped)
        assert status == 413 and error["error"]["code"] == "payload_too_large", error
        settings = Settings.load({"objects_dir": str(tmp_path / "objects")}, environ={})
        enqueue_job(real_redis, settings, TRAIN, "d" * 32, {"stage": "vqgan", "dataset": doc["id"]})
        status, _, error = api.call("DELETE", f"/v1/datasets/{doc['id']}", key=ADMIN)
        assert status == 409 and error["error"]["details"]["jobs"] == ["d" * 32], error

        worker = Settings.load(
            {"objects_dir": str(tmp_path / "mac-mini"), "results_url": api.url,
             "worker_key": WORKER},
            environ={},
        )  # fmt: skip
        folder = fetch_dataset(worker, doc["id"])
        assert len(CaptionDataset(folder, strict=True)) == 3

        assert api.call("DELETE", f"/v1/jobs/{'d' * 32}", key=ADMIN)[0] == 200
        assert api.call("DELETE", f"/v1/datasets/{doc['id']}", key=ADMIN)[0] == 204
        assert datasets_left(tmp_path / "objects") == []
    finally:
        api.stop()
