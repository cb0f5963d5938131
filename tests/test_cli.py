"""The CLI front end: every command is wired, bad input is one line (no traceback)."""

import os
import subprocess
import sys

import pytest

from pixelscene.cli import build_parser, commands, find_openblas


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pixelscene", *args],
        capture_output=True,
        text=True,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("_PIXELSCENE")},
            **(env or {}),
        },
        timeout=120,
    )


def test_every_command_module_loads_and_has_help():
    parser = build_parser()
    for path, module, _ in commands():
        args = None
        # parse "--help" of each leaf without exiting the test process
        with pytest.raises(SystemExit) as e:
            args = parser.parse_args([*path, "--help"])
        assert e.value.code == 0, (path, module, args)


def test_bad_config_is_one_line_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("vqgan:\n  hiden: 1\n")
    out = run_cli(
        "train",
        "vqgan",
        "--config",
        str(bad),
        "--data",
        str(tmp_path),
        "--out",
        str(tmp_path / "m"),
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "bad.yaml, line 2: unknown key vqgan.hiden" in out.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["train", "transformer", "--data", "D", "--vqgan", "D", "--out", "D/m", "--config", "C"],
        ["train", "vqgan", "--data", "D", "--out", "D/m", "--config", "C"],
        ["bench", "sampling", "--presets", "C"],
        ["bench", "sampling", "--batches", "1,x"],
        ["bench", "sampling", "--engines", "numpy,gpu"],
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, command):
    from pixelscene import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntransformer:\n  embed_dim: -3\n")
    argv = [str(bad) if a == "C" else a.replace("D", str(tmp_path)) for a in command]
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    assert err[-1].startswith(("pixelscene: error:", "usage:", "pixelscene ")), err
    if "C" in command:
        assert "bad.yaml, line 3: transformer.embed_dim must be > 0" in err[-1]


@pytest.mark.skipif(find_openblas() is None, reason="Debian's OpenBLAS is not installed here")
def test_openblas_is_preloaded_and_said_once(tmp_path):
    out = run_cli("synth", str(tmp_path / "s"), "--count", "2", "--seed", "1")
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("using OpenBLAS") == 1


def test_works_without_openblas(tmp_path):
    out = run_cli(
        "synth",
        str(tmp_path / "s"),
        "--count",
        "2",
        env={"PIXELSCENE_NO_OPENBLAS": "1", "LD_PRELOAD": ""},
    )
    assert out.returncode == 0, out.stderr
    assert "using OpenBLAS" not in out.stderr
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == 2


def test_decoder_fine_tune_names_missing_data_and_writes_nothing(tmp_path):
    out = run_cli(
        "train", "decoder", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "m")
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "none/captions.jsonl: captions file not found" in out.stderr
    assert not (tmp_path / "m").exists()
