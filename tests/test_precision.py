"""pixelscene keeps MLX's float32 products in float32 unless the user chose otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = "import os, pixelscene; print(os.environ['MLX_ENABLE_TF32'])"


@pytest.mark.parametrize("given, expected", [(None, "0"), ("1", "1"), ("0", "0")])
def test_tf32_is_off_unless_set(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "MLX_ENABLE_TF32"}
    if given is not None:
        env["MLX_ENABLE_TF32"] = given
    out = subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == expected
