"""Cephes' float32 exp from multiplies and adds: x = k ln2 + r with |r| <= ln(2)/2, then
exp(r) = 1 + r + r^2 P(r) and 2^k through the exponent bits. Used where the platform's own exp
is slow: the compiled CPU sampling step (`sampling/cpu_kernels.py`) and the VQGAN's silu on
MLX's CPU device (`vqgan/layers.py`). Accurate to float32 rounding."""

LOG2E = 1.4426950408889634
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4  # ln 2 split so that k * LN2_HI is exact
POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
        1.6666665459e-1, 5.0000001201e-1)  # fmt: skip
