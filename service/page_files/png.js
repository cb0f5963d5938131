// PNG files for the download buttons. The server's PNG is indexed when the job had a
// palette, else RGB; each button gives the other form by writing a PNG here, with the
// server's tEXt fields (prompt, seed, settings, model) copied over.

const PNG_SIGNATURE = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
const TEXT_CHUNKS = new Set(["tEXt", "zTXt", "iTXt"]);
const COLOUR_RGB = 2;
const COLOUR_INDEXED = 3;

function pngChunks(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const chunks = [];
  for (let at = PNG_SIGNATURE.length; at + 12 <= bytes.length; ) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    chunks.push({ type, data: bytes.subarray(at + 8, at + 8 + length) });
    at += 12 + length;
    if (type === "IEND") break;
  }
  return chunks;
}

const colourType = (bytes) => pngChunks(bytes)[0].data[9]; // IHDR's tenth byte

let crcTable = null;

function crc32(bytes) {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const byte of bytes) crc = crcTable[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function pngChunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

async function zlibDeflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** A PNG of 8-bit rows (each starting with filter byte 0), RGB or indexed. */
async function encodePng(width, height, rows, type, palette, texts) {
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header[8] = 8; // bits per sample; compression, filter and interlace stay 0
  header[9] = type;
  const parts = [PNG_SIGNATURE, pngChunk("IHDR", header)];
  if (palette) parts.push(pngChunk("PLTE", palette));
  for (const text of texts) parts.push(pngChunk(text.type, text.data));
  parts.push(pngChunk("IDAT", await zlibDeflate(rows)), pngChunk("IEND", new Uint8Array(0)));
  return new Blob(parts, { type: "image/png" });
}

async function decodePixels(blob) {
  const exact = { colorSpaceConversion: "none", premultiplyAlpha: "none" };
  const bitmap = await createImageBitmap(blob, exact);
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  const { data } = context.getImageData(0, 0, bitmap.width, bitmap.height);
  return { width: bitmap.width, height: bitmap.height, rgba: data };
}

const textChunks = (bytes) => pngChunks(bytes).filter((c) => TEXT_CHUNKS.has(c.type));

/** An RGB PNG of the server's PNG (`blob`, whose `bytes` these are). */
export async function rgbPng(blob, bytes) {
  if (colourType(bytes) === COLOUR_RGB) return blob;
  const { width, height, rgba } = await decodePixels(blob);
  const rows = new Uint8Array(height * (1 + 3 * width));
  let o = 0;
  for (let i = 0; i < width * height; i++) {
    if (i % width === 0) rows[o++] = 0;
    rows[o++] = rgba[4 * i];
    rows[o++] = rgba[4 * i + 1];
    rows[o++] = rgba[4 * i + 2];
  }
  return encodePng(width, height, rows, COLOUR_RGB, null, textChunks(bytes));
}

/** {blob}: the indexed PNG (the server's own when the job had a palette, else one of the
 * image's colours if they are 256 or fewer); {colours}: too many colours to index. */
export async function indexedPng(blob, bytes) {
  if (colourType(bytes) === COLOUR_INDEXED) return { blob };
  const { width, height, rgba } = await decodePixels(blob);
  const index = new Map();
  const rows = new Uint8Array(height * (1 + width));
  let o = 0;
  for (let i = 0; i < width * height; i++) {
    if (i % width === 0) rows[o++] = 0;
    const colour = (rgba[4 * i] << 16) | (rgba[4 * i + 1] << 8) | rgba[4 * i + 2];
    let k = index.get(colour);
    if (k === undefined) {
      k = index.size;
      index.set(colour, k);
    }
    rows[o++] = k;
  }
  if (index.size > 256) return { colours: index.size };
  const palette = new Uint8Array(3 * index.size);
  for (const [colour, k] of index) {
    palette.set([colour >> 16, (colour >> 8) & 255, colour & 255], 3 * k);
  }
  return { blob: await encodePng(width, height, rows, COLOUR_INDEXED, palette, textChunks(bytes)) };
}
