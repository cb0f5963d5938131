"""Game-ready output: palettes (`palettes`), PNG files with nearest-neighbour upscaling and
metadata (`png`), code-grid JSON (`codes`), a generated image saved with both
(`generated`), and labelled contact sheets of many images (`sheet`).

Pixels here are uint8 (H, W, 3) arrays, as `PixelScene` returns them. A palette is a
(N, 3) uint8 array; an image reduced to one is written as an indexed (mode "P") PNG whose
PLTE chunk holds exactly those N colours.

Palette specs (`--palette`):
    none        keep the raw RGB pixels
    vga         snap to the VGA mode 13h default palette (256 colours)
    auto:N      the N colours that best fit this image (median cut + k-means), 2 <= N <= 256
    FILE        a .gpl (GIMP), .pal (JASC-PAL) or .hex (one RRGGBB per line) palette file
"""

from pixelscene.errors import OutputError
from pixelscene.output.codes import CODES_FORMAT, codes_from_json, codes_to_json, read_codes
from pixelscene.output.generated import save_generated
from pixelscene.output.palettes import (
    MAX_COLOURS,
    apply_palette,
    auto_palette,
    check_palette_spec,
    parse_palette_file,
    quantize,
    resolve_palette,
    vga_palette,
)
from pixelscene.output.png import (
    MAX_SCALE,
    check_output_path,
    check_scale,
    generation_metadata,
    numbered_paths,
    png_bytes,
    read_png_metadata,
    save_png,
    upscale,
    write_file,
)
from pixelscene.output.sheet import LABEL_H, image_grid, labelled_grid, sheet_shape

__all__ = [
    "CODES_FORMAT",
    "LABEL_H",
    "MAX_COLOURS",
    "MAX_SCALE",
    "OutputError",
    "apply_palette",
    "auto_palette",
    "check_output_path",
    "check_palette_spec",
    "check_scale",
    "codes_from_json",
    "codes_to_json",
    "generation_metadata",
    "image_grid",
    "labelled_grid",
    "numbered_paths",
    "parse_palette_file",
    "png_bytes",
    "quantize",
    "read_codes",
    "read_png_metadata",
    "resolve_palette",
    "save_generated",
    "save_png",
    "sheet_shape",
    "upscale",
    "vga_palette",
    "write_file",
]
