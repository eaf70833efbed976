#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: tests/fuzz/corpus/png and corpus/safetensors.

Small valid files of every kind the readers accept, and corrupt ones of every kind they must
refuse, so that a short run starts deep in both. Deterministic (standard library only); rerun after
changing it and commit the files: python3 tests/fuzz/make_corpus.py
"""
import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png(width, height, bit_depth, color_type, raw, extra=b"", interlace=0, idat_parts=1):
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    z = zlib.compress(raw, 9)
    step = max(1, (len(z) + idat_parts - 1) // idat_parts)
    idats = b"".join(chunk(b"IDAT", z[i:i + step]) for i in range(0, len(z), step))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + idats + chunk(b"IEND", b"")


CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def row_bytes(width, bit_depth, color_type):
    return (width * CHANNELS[color_type] * bit_depth + 7) // 8


def sample_rows(width, height, bit_depth, color_type, seed):
    """Rows of packed samples (no filter byte), a simple deterministic pattern."""
    n = row_bytes(width, bit_depth, color_type)
    return [bytes((seed + 37 * y + 11 * x) & 0xFF for x in range(n)) for y in range(height)]


def filtered(rows, bpp):
    """Each row with a filter byte, cycling through the five filter types."""
    out = b""
    prev = bytes(len(rows[0])) if rows else b""
    for y, row in enumerate(rows):
        f = y % 5
        enc = bytearray()
        for i, v in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 0:
                p = 0
            elif f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            enc.append((v - p) & 0xFF)
        out += bytes([f]) + bytes(enc)
        prev = row
    return out


def image(width, height, bit_depth, color_type, seed=0, extra=b"", idat_parts=1):
    bpp = max(1, CHANNELS[color_type] * bit_depth // 8)
    rows = sample_rows(width, height, bit_depth, color_type, seed)
    return png(width, height, bit_depth, color_type, filtered(rows, bpp), extra,
               idat_parts=idat_parts)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def interlaced_rgb8(width, height):
    pixels = [[((x * 40) & 0xFF, (y * 60) & 0xFF, (x * y) & 0xFF) for x in range(width)]
              for y in range(height)]
    raw = b""
    for x0, y0, dx, dy in ADAM7:
        for y in range(y0, height, dy):
            cols = range(x0, width, dx)
            if len(cols) == 0:
                continue
            raw += b"\x00" + b"".join(bytes(pixels[y][x]) for x in cols)
    return png(width, height, 8, 2, raw, interlace=1)


def png_corpus():
    plte = chunk(b"PLTE", bytes(range(0, 48)))
    files = {
        "rgb8.png": image(7, 5, 8, 2),
        "rgba8.png": image(5, 4, 8, 6, seed=3),
        "rgb16.png": image(4, 3, 16, 2, seed=5),
        "rgba16.png": image(3, 3, 16, 6, seed=7),
        "grey8.png": image(9, 4, 8, 0, seed=9),
        "grey16.png": image(6, 3, 16, 0, seed=11),
        "grey4.png": image(9, 3, 4, 0, seed=13),
        "grey2.png": image(10, 2, 2, 0, seed=15),
        "grey1.png": image(17, 2, 1, 0, seed=17),
        "grey_alpha8.png": image(4, 4, 8, 4, seed=19),
        "grey_alpha16.png": image(3, 2, 16, 4, seed=21),
        "grey8_trns.png": image(5, 2, 8, 0, seed=23, extra=chunk(b"tRNS", b"\x00\x07")),
        "palette8_trns.png": image(6, 3, 8, 3, seed=1,
                                   extra=plte + chunk(b"tRNS", bytes([0, 128, 255]))),
        "palette2.png": image(8, 3, 2, 3, seed=2, extra=plte),
        "interlaced_rgb8.png": interlaced_rgb8(11, 9),
        "multi_idat_grey8.png": image(16, 8, 8, 0, seed=29, idat_parts=4),
    }
    good = files["rgb8.png"]
    files["truncated.png"] = good[: len(good) - 20]
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x10
    files["bad_crc.png"] = bytes(bad)
    # A header declaring 32768x32768 over a few rows of data.
    files["huge_header.png"] = png(32768, 32768, 8, 0, bytes(4 * 32769))
    # Data shorter than the header's size (valid CRCs: the decoder must notice).
    files["short_data.png"] = png(64, 64, 8, 2, bytes(10 * 193))
    return files


def safetensors(header, data=b"", pad=True):
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_corpus():
    tensors = [("w", "F32", [2, 3]), ("idx", "I64", [2]), ("flag", "U8", []),
               ("half", "F16", [1, 2]), ("brain", "BF16", [2]), ("d", "F64", [1]),
               ("i", "I32", [3]), ("empty", "F32", [0, 3])]
    sizes = {"F32": 4, "F64": 8, "F16": 2, "BF16": 2, "I32": 4, "I64": 8, "U8": 1}
    header = {"__metadata__": {"format": "pt", "step": "12"}}
    data = b""
    for name, dtype, shape in tensors:
        n = sizes[dtype]
        for s in shape:
            n *= s
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + n]}
        data += bytes((len(data) + k) & 0xFF for k in range(n))
    one = {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    return {
        "valid.safetensors": safetensors(header, data),
        "one.safetensors": safetensors(one, bytes(8)),
        "empty.safetensors": safetensors({}),
        "trailing.safetensors": safetensors(one, bytes(12)),
        "truncated.safetensors": safetensors(one, bytes(4)),
        "overlap.safetensors": safetensors(
            {"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
             "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, bytes(6)),
        "hole.safetensors": safetensors(
            {"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
             "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}}, bytes(6)),
        "reversed.safetensors": safetensors(
            {"a": {"dtype": "U8", "shape": [2], "data_offsets": [2, 0]}}, bytes(2)),
        "unknown_dtype.safetensors": safetensors(
            {"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8)),
        "shape_overflow.safetensors": safetensors(
            {"a": {"dtype": "F64", "shape": [2**62, 2**62], "data_offsets": [0, 0]}}),
        "duplicate.safetensors": safetensors(
            b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
            b'"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', bytes(1)),
        "bad_json.safetensors": safetensors(b'{"a": {"dtype": "F32", "shape": [1', bytes(4)),
        "not_object.safetensors": safetensors(b"[1, 2, 3]"),
        "huge_length.safetensors": struct.pack("<Q", 2**63) + b"{}",
        "short.safetensors": b"\x08\x00\x00",
    }


def write(folder, files):
    path = os.path.join(HERE, "corpus", folder)
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        os.remove(os.path.join(path, name))
    for name, data in sorted(files.items()):
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("png", png_corpus())
    write("safetensors", safetensors_corpus())
