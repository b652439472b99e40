"""The lake's tensor codec: exact round trips, and damage is an error, never a wrong array."""

from __future__ import annotations

import numpy as np
import pytest
from ctlake.lake import codec


@pytest.mark.parametrize("dtype", ["int16", "uint8", "float32", "bool", ">i2"])
@pytest.mark.parametrize("shape", [(1,), (3, 4, 5), (0, 7), (2, 1, 1, 3)])
def test_round_trip_exact(dtype, shape):
    rng = np.random.default_rng(1)
    arr = (rng.normal(0, 400, size=shape) if dtype != "bool" else rng.random(shape) > 0.5).astype(dtype)
    back = codec.decode(codec.encode(arr))
    assert back.shape == arr.shape
    assert back.dtype == np.dtype(dtype).newbyteorder("<")  # big-endian input comes back little-endian
    np.testing.assert_array_equal(back, arr)


def test_hu_volume_compresses_and_shuffle_helps():
    from ctlake.synth import phantom_volume

    hu = phantom_volume(np.random.default_rng(0), size=128, slices=16).hu.astype(np.int16)
    plain, shuffled = codec.encode(hu, shuffle=False), codec.encode(hu)
    assert len(shuffled) < len(plain) < hu.nbytes
    np.testing.assert_array_equal(codec.decode(shuffled), hu)


def test_damage_is_detected():
    blob = codec.encode(np.arange(1000, dtype=np.int16).reshape(10, 100))
    with pytest.raises(codec.CodecError, match="magic"):
        codec.decode(b"XXXX" + blob[4:])
    with pytest.raises(codec.CodecError):
        codec.decode(blob[:-10])
    with pytest.raises(codec.CodecError):
        codec.decode(blob[:20])
    with pytest.raises(codec.CodecError, match="unsupported dtype"):
        codec.encode(np.zeros(3, dtype=np.float64))


def test_slabs_cover_the_volume_once():
    vol = np.zeros((37, 64, 64), dtype=np.int16)  # 8 KiB per slice
    ranges = codec.slabs(vol, target_bytes=5 * 8192)
    assert ranges[0] == (0, 5) and ranges[-1] == (35, 37)
    assert [z for a, b in ranges for z in range(a, b)] == list(range(37))
