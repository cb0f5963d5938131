"""Dataset uploads: the object-directory layout, the safe unpacking and the /v1/datasets API."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from workers.jobstore.datasets import DatasetNotFoundError, dataset_dir

DATASET_ID = "0123456789abcdef0123456789abcdef"


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
