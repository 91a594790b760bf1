"""Pictures: palettes, colour maps, overlays, grids."""

import numpy as np
import pytest

from bidense.engine import visualize as V


def test_palettes_match_the_published_colours():
    voc = V.voc_palette()
    assert tuple(voc[0]) == (0, 0, 0) and tuple(voc[1]) == (128, 0, 0)
    assert tuple(voc[15]) == (192, 128, 128) and tuple(voc[255]) == (224, 224, 192)
    ade = V.ade20k_palette()
    assert ade.shape == (150, 3) and tuple(ade[0]) == (120, 120, 120)
    assert tuple(ade[149]) == (0x5C, 0x00, 0xFF)
    assert tuple(V.CITYSCAPES_PALETTE[0]) == (128, 64, 128) and len(V.CITYSCAPES_PALETTE) == 19
    assert V.palette_for(19, "cityscapes") is V.CITYSCAPES_PALETTE
    assert len(V.palette_for(300)) == 300


def test_colorize_overlay_and_depth():
    labels = np.array([[0, 1], [255, 7]])
    colors = V.colorize_labels(labels, V.voc_palette(5))
    assert tuple(colors[0, 1]) == (128, 0, 0)
    assert tuple(colors[1, 0]) == (0, 0, 0) and tuple(colors[1, 1]) == (0, 0, 0)  # ignore, range
    image = np.full((2, 2, 3), 200, np.uint8)
    assert V.overlay(image, colors, 0.5)[0, 1, 0] == 164  # (200 + 128) / 2
    with pytest.raises(ValueError, match="opacity"):
        V.overlay(image, colors, 1.5)
    depth = np.array([[1.0, 2.0], [0.0, 4.0]])
    pic = V.colorize_depth(depth)
    assert tuple(pic[1, 0]) == (0, 0, 0)  # invalid depth is black
    # inverse depth, min-max normalised: the nearest pixel gets turbo(1), the farthest turbo(0)
    assert tuple(pic[0, 0]) == tuple(V.turbo(1.0)) and tuple(pic[1, 1]) == tuple(V.turbo(0.0))


def test_turbo_endpoints_and_grid():
    # turbo (polynomial approximation): blue at the low end, green mid-way, red at the top
    low, mid, high = V.turbo(0.2), V.turbo(0.5), V.turbo(1.0)
    assert low[2] > low[0] and mid[1] == mid.max() and high[0] > high[2]
    assert V.turbo(-1.0).tolist() == V.turbo(0.0).tolist()  # clipped
    tiles = [[np.zeros((4, 5, 3), np.uint8)] * 3] * 2
    g = V.grid(tiles, pad=1)
    assert g.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    chw = np.zeros((3, 2, 2), np.float32)
    assert tuple(V.denormalize(chw)[0, 0]) == (124, 116, 104)  # ImageNet mean in uint8
