"""Loaders on good and bad data: shapes, ranges, reports with file and line, exact resume."""

import json

import numpy as np
import pytest
from PIL import Image

from pixelscene.data.datasets import (
    CaptionDataset,
    ImageDataset,
    batch_iterator,
    to_float,
    to_uint8,
)
from pixelscene.errors import DataError


def write_images(folder, count, size=(320, 200)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", size, color=(i * 20 % 256, 64, 128)).save(folder / f"{i:06d}.png")


def test_image_dataset_channels_last_in_range(tmp_path):
    write_images(tmp_path / "images", 3)
    ds = ImageDataset(tmp_path)
    assert len(ds) == 3
    img = ds[1]
    assert img.shape == (200, 320, 3) and img.dtype == np.float32
    assert img.min() >= -1.0 and img.max() <= 1.0
    # 20 -> -1 + 40/255 exactly as the uint8 round trip says
    np.testing.assert_array_equal(to_uint8(img)[0, 0], [20, 64, 128])


def test_other_sizes_resized_with_nearest_or_rejected(tmp_path):
    img = np.zeros((100, 160, 3), np.uint8)
    img[:, 80:] = 255  # a hard vertical edge must stay hard after resizing
    Image.fromarray(img).save(tmp_path / "half.png")
    ds = ImageDataset(tmp_path)
    out = to_uint8(ds[0])
    assert out.shape == (200, 320, 3)
    assert set(np.unique(out)) == {0, 255}  # nearest neighbour: no blended colours
    strict = ImageDataset(tmp_path, resize=False, strict=True)
    with pytest.raises(DataError, match="half.png.*160x100"):
        strict[0]


def test_unreadable_image_skipped_with_count_or_fatal_when_strict(tmp_path):
    write_images(tmp_path, 4)
    (tmp_path / "000002.png").write_bytes(b"not a png")
    ds = ImageDataset(tmp_path)
    batches = list(batch_iterator(ds, batch_size=3, shuffle=False, epochs=1))
    assert len(batches) == 1 and batches[0].shape == (3, 200, 320, 3)
    assert len(ds.problems) == 1 and "000002.png" in ds.problems[0]
    assert "1 bad item" in ds.summary()
    strict = ImageDataset(tmp_path, strict=True)
    with pytest.raises(DataError, match="000002.png: unreadable"):
        list(batch_iterator(strict, batch_size=3, shuffle=False, epochs=1))


def test_caption_dataset_pairs_and_lists(tmp_path):
    write_images(tmp_path / "images", 2)
    rows = [
        {"image": "000000.png", "caption": "a castle at dusk"},
        {"image": "000001.png", "caption": ["hills by day", "green hills"]},
    ]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = CaptionDataset(tmp_path)
    assert len(ds) == 3
    image, caption = ds[0]
    assert image.shape == (200, 320, 3) and caption == "a castle at dusk"
    assert ds.captions_by_image()["000001.png"] == ["hills by day", "green hills"]


def test_bad_caption_lines_reported_with_file_and_line(tmp_path):
    write_images(tmp_path / "images", 1)
    lines = [
        json.dumps({"image": "000000.png", "caption": "ok"}),
        "{not json",
        json.dumps({"image": "000000.png"}),
        json.dumps({"image": "missing.png", "caption": "gone"}),
    ]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    ds = CaptionDataset(tmp_path)
    assert len(ds) == 1
    assert [p.split(": ")[0].rsplit(":", 1)[1] for p in ds.problems] == ["2", "3", "4"]
    assert "malformed JSON" in ds.problems[0]
    assert "missing key 'caption'" in ds.problems[1]
    assert "missing.png" in ds.problems[2] and "not found" in ds.problems[2]
    with pytest.raises(DataError, match=r"captions.jsonl:2: malformed JSON"):
        CaptionDataset(tmp_path, strict=True)


def test_a_caption_line_that_is_not_utf8_is_reported_and_the_rest_kept(tmp_path):
    write_images(tmp_path / "images", 2)
    (tmp_path / "captions.jsonl").write_bytes(
        b'{"image": "000000.png", "caption": "caf\xe9 at dusk"}\n'  # Latin-1
        b"{broken\n"
        b'{"image": "000001.png", "caption": "caf\xc3\xa9 at dawn"}\n'  # UTF-8
    )
    ds = CaptionDataset(tmp_path)
    assert [c for _, c in ds.pairs] == ["caf\u00e9 at dawn"]
    assert len(ds.problems) == 2
    assert ds.problems[0].endswith(
        "captions.jsonl:1: not UTF-8 text (invalid continuation byte at byte 40 of the line)"
    )
    assert "captions.jsonl:2: malformed JSON" in ds.problems[1]
    with pytest.raises(DataError, match=r"captions.jsonl:1: not UTF-8 text"):
        CaptionDataset(tmp_path, strict=True)


def test_batch_iterator_is_seeded_and_resumes_exactly():
    data = np.arange(10, dtype=np.float32)[:, None]

    class Items:
        def __len__(self):
            return len(data)

        def try_get(self, i):
            return data[i]

    ds = Items()
    first = [b.ravel().tolist() for _, b in zip(range(7), batch_iterator(ds, 3, seed=5))]
    again = [b.ravel().tolist() for _, b in zip(range(7), batch_iterator(ds, 3, seed=5))]
    other = [b.ravel().tolist() for _, b in zip(range(7), batch_iterator(ds, 3, seed=6))]
    resumed = [
        b.ravel().tolist() for _, b in zip(range(3), batch_iterator(ds, 3, 5, start_batch=4))
    ]
    assert first == again and first != other
    assert resumed == first[4:7]
    # each epoch (3 batches of 3 from 10 items) draws distinct items
    assert len(set(sum(first[:3], []))) == 9


def test_to_float_range():
    px = np.array([[[0, 128, 255]]], np.uint8)
    np.testing.assert_allclose(to_float(px), [[[-1.0, 128 / 127.5 - 1, 1.0]]], atol=1e-6)
