"""Config presets load and validate; bad keys, types and sizes are named in the error."""

import pytest
import yaml

from pixelscene.config import Config, ConfigError, load_config


@pytest.mark.parametrize(
    "name, model", [("tiny", "tiny"), ("tiny-learned", "tiny-learned"), ("base", "base"),
                    ("tiny-sprites", "tiny"), ("tiny-sprites-2", "tiny")],  # the fine-tune of `tiny` keeps its name
)  # fmt: skip
def test_presets_tile_320x200_into_13x20(name, model):
    cfg = load_config(f"configs/{name}.yaml")
    assert cfg.name == model
    assert cfg.vqgan.downsample_factor == 16
    assert cfg.vqgan.padded_size == (208, 320)
    assert cfg.vqgan.grid_size == (13, 20)


def test_base_preset_has_the_plans_sizes():
    cfg = load_config("base")
    assert cfg.vqgan.hidden_channels == 128
    assert cfg.vqgan.channel_multipliers == [1, 2, 2, 4]
    assert cfg.vqgan.num_res_blocks == 2 and cfg.vqgan.codebook_size == 512
    t = cfg.transformer
    assert (t.embed_dim, t.num_heads, t.num_layers) == (256, 8, 6)


def write(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key vqgan\.hiden_channels"):
        load_config(write(tmp_path, {"vqgan": {"hiden_channels": 3}}))
    with pytest.raises(ConfigError, match="unknown key trainer"):
        load_config(write(tmp_path, {"trainer": {}}))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"vqgan\.codebook_size must be an integer"):
        load_config(write(tmp_path, {"vqgan": {"codebook_size": "512"}}))
    with pytest.raises(ConfigError, match=r"vqgan\.channel_multipliers\[1\] must be an integer"):
        load_config(write(tmp_path, {"vqgan": {"channel_multipliers": [1, 2.5]}}))
    with pytest.raises(ConfigError, match=r"sampling\.top_p must be a number"):
        load_config(write(tmp_path, {"sampling": {"top_p": True}}))
    with pytest.raises(ConfigError, match=r"transformer\.pooled_text must be true or false"):
        load_config(write(tmp_path, {"transformer": {"pooled_text": "yes"}}))
    with pytest.raises(ConfigError, match=r"train_transformer\.first_row_weight must be > 0"):
        load_config(write(tmp_path, {"train_transformer": {"first_row_weight": 0}}))
    with pytest.raises(ConfigError, match=r"train_transformer\.text_noise must be >= 0"):
        load_config(write(tmp_path, {"train_transformer": {"text_noise": -1}}))
    ok = load_config(write(tmp_path, {"transformer": {"pooled_text": True}}))
    assert ok.transformer.pooled_text is True


def test_image_size_the_downsampling_does_not_divide(tmp_path):
    with pytest.raises(ConfigError, match=r"vqgan\.image_size .* does not divide"):
        load_config(write(tmp_path, {"vqgan": {"pad_rows": [0, 0]}}))  # 200 % 16 != 0
    with pytest.raises(ConfigError, match=r"vqgan\.image_size"):
        load_config(write(tmp_path, {"vqgan": {"image_size": [208, 300]}}))


def test_ranges_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"transformer\.embed_dim must be divisible"):
        load_config(write(tmp_path, {"transformer": {"embed_dim": 130, "num_heads": 4}}))
    with pytest.raises(ConfigError, match=r"transformer\.text_encoder"):
        load_config(write(tmp_path, {"transformer": {"text_encoder": "clip"}}))


def test_round_trip_through_dict():
    cfg = load_config("tiny")
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("vqgan: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml, line 2: not valid YAML"):
        load_config(bad)
    bad_json = tmp_path / "config.json"
    bad_json.write_text('{"name": "x",\n "vqgan": {,}}')
    with pytest.raises(ConfigError, match="config.json, line 2: not valid JSON"):
        load_config(bad_json)


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("name: t\ntrain_vqgan:\n  batch_size: 8\n  stepz: 3\n", "line 4", "unknown key"),
        ("name: t\ntrain_vqgan:\n  steps: abc\n", "line 3", "must be an integer"),
        ("name: t\n\nsampling:\n  temperature: .nan\n", "line 4", "must be a finite number"),
        ("name: t\nvqgan:\n  image_size: [200, 0]\n", "line 3", "image_size"),
        ("name: t\ntransformer:\n  embed_dim: 100\n  num_heads: 3\n", "line 3", "divisible"),
    ],
)
def test_errors_name_the_file_and_line(tmp_path, text, where, message):
    path = tmp_path / "preset.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"preset.yaml, {where}: .*{message}"):
        load_config(path)


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    from pixelscene import model_io

    model_io.atomic_write_bytes(tmp_path / "a.json", b"{}")
    assert (tmp_path / "a.json").read_bytes() == b"{}"
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~model_io._UMASK
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left
