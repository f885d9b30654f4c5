"""Label Studio's brush RLE, encoded and decoded here (no vendor SDK in the project's venv).

Format (what Label Studio's frontend and ``label_studio_sdk.converter.brush`` read and write): a
bit stream over the *RGBA* bytes of the image, row-major, 4 bytes per pixel. Header: pixel-byte
count (32 bits), word size - 1 (5 bits), then four run-length field widths - 1 (4 bits each).
Then blocks until the count is reached: 1 flag bit, 2 bits choosing a length-field width, the
length - 1 in that width, then either one word repeated ``length`` times (flag 1) or ``length``
literal words (flag 0). The bit string is zero-padded to whole bytes and sent as a list of ints.

Why our own: the SDK costs ~500 MB of dependencies for two small functions. The round trip is
tested against the SDK in the server's venv (tests/labeling/test_rle_against_sdk.py). One mask
per class: foreground 255 in all four channels, background 0 (what the SDK's ``mask2rle`` does).
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 8
LENGTH_BITS: tuple[int, int, int, int] = (3, 4, 8, 16)
_MAX_RUN = 1 << LENGTH_BITS[-1]


class RleError(ValueError):
    """The RLE is not a well-formed brush mask (truncated, wrong size, wrong word size)."""


def _length_field(n: int) -> tuple[int, int]:
    """(width index, width) of the smallest length field holding ``n`` - 1."""
    for idx, width in enumerate(LENGTH_BITS):
        if n - 1 < (1 << width):
            return idx, width
    raise AssertionError(f"run of {n} exceeds the longest length field")


def _runs(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets and values of the runs of equal bytes in ``flat``."""
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], change))
    return starts, flat[starts]


def encode(values: np.ndarray) -> list[int]:
    """Encode a flat uint8 array (RGBA bytes) as brush RLE.

    Runs of length 1 are grouped into literal blocks; longer runs become repeat blocks, split
    at 65 536 (the widest length field).
    """
    flat = np.ascontiguousarray(values, dtype=np.uint8).ravel()
    if flat.size == 0:
        raise RleError("cannot encode an empty mask")
    fields: list[str] = [
        format(flat.size, "032b"),
        format(WORD_BITS - 1, "05b"),
        *(format(w - 1, "04b") for w in LENGTH_BITS),
    ]
    starts, vals = _runs(flat)
    lengths = np.diff(np.concatenate((starts, [flat.size])))
    literal: list[int] = []

    def flush_literal() -> None:
        for i in range(0, len(literal), _MAX_RUN):
            chunk = literal[i : i + _MAX_RUN]
            idx, width = _length_field(len(chunk))
            fields.append(f"0{idx:02b}{len(chunk) - 1:0{width}b}")
            fields.append("".join(format(v, "08b") for v in chunk))
        literal.clear()

    for length, value in zip(lengths.tolist(), vals.tolist(), strict=True):
        if length == 1:
            literal.append(value)
            continue
        flush_literal()
        while length > 0:
            n = min(length, _MAX_RUN)
            idx, width = _length_field(n)
            fields.append(f"1{idx:02b}{n - 1:0{width}b}{value:08b}")
            length -= n
    flush_literal()
    bits = "".join(fields)
    bits += "0" * (-len(bits) % 8)
    packed = np.packbits(np.frombuffer(bits.encode(), dtype=np.uint8) - ord("0"))
    return [int(b) for b in packed]


def decode(rle: list[int]) -> np.ndarray:
    """Decode brush RLE to the flat uint8 array it encodes.

    Raises:
        RleError: not a list of bytes, an unsupported word size, or a stream that ends early.
    """
    try:
        raw = np.asarray(rle, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise RleError(f"RLE is not a list of integers: {exc}") from None
    if raw.ndim != 1 or raw.size < 7 or raw.min() < 0 or raw.max() > 255:
        raise RleError("RLE must be a list of at least 7 byte values (0-255)")
    bits = (np.unpackbits(raw.astype(np.uint8)) + ord("0")).tobytes().decode()
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > len(bits):
            raise RleError("RLE stream ends before the mask is complete")
        value = int(bits[pos : pos + n], 2)
        pos += n
        return value

    num = read(32)
    word = read(5) + 1
    if word != WORD_BITS:
        raise RleError(f"word size {word} bits is not supported (brush masks use 8)")
    widths = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8)
    i = 0
    while i < num:
        repeat = read(1)
        n = read(widths[read(2)]) + 1
        if i + n > num:
            raise RleError(f"a run of {n} overflows the declared size {num}")
        if repeat:
            out[i : i + n] = read(word)
        else:
            out[i : i + n] = [read(word) for _ in range(n)]
        i += n
    return out


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """Brush RLE of a boolean (H, W) mask: 255 in all four RGBA channels where True."""
    if mask.ndim != 2:
        raise RleError(f"a brush mask is 2-D (H, W), got shape {mask.shape}")
    rgba = np.repeat((mask.astype(bool) * np.uint8(255))[..., None], 4, axis=2)
    return encode(rgba)


def rle_to_mask(rle: list[int], height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of a brush RLE: alpha above half (brush strokes may be anti-aliased).

    Raises:
        RleError: malformed RLE, or one that does not hold exactly ``height * width`` pixels.
    """
    flat = decode(rle)
    if flat.size != height * width * 4:
        raise RleError(
            f"RLE holds {flat.size} bytes, a {height}x{width} RGBA mask needs {height * width * 4}"
        )
    return flat.reshape(height, width, 4)[:, :, 3] > 127
