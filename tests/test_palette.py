"""Scene pictures as palette-block tokens: exact palette, round trip bounded, codebook pure."""

from __future__ import annotations

import numpy as np
import pytest

from plait.data.palette import PALETTE, BlockCodebook, blocks, to_indices, to_rgb
from plait.data.scenes import scenes


def pictures(n: int, split: str = "train", start: int = 0) -> list[np.ndarray]:
    return [to_indices(np.asarray(s.render(48))) for s in scenes(n, split, start=start)]


def test_scenes_are_drawn_in_the_palette_exactly():
    for s in scenes(20, "heldout"):
        rgb = np.asarray(s.render(48))
        assert np.array_equal(to_rgb(to_indices(rgb)), rgb)


def test_blocks_are_squares_in_reading_order():
    x = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert blocks(x, 2).tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13],
                                     [10, 11, 14, 15]]
    with pytest.raises(ValueError, match="does not split"):
        blocks(np.zeros((6, 5), np.uint8), 2)


def test_round_trip_error_is_bounded_on_unseen_pictures(tmp_path):
    book = BlockCodebook.build(pictures(500), k=256)
    assert book.vocab_size == 1 + 6 * len(book.masks) and book.n_tokens == 144
    held = pictures(100, "heldout")
    wrong = [(book.decode(book.encode(p)) != p).mean() for p in held]
    assert np.mean(wrong) < 0.005 and max(wrong) < 0.03  # pixels changed by the round trip
    # every colour survives exactly where it is not at a mask's edge
    for p in held[:10]:
        assert set(np.unique(book.decode(book.encode(p)))) == set(np.unique(p))
    # pure in its pictures, and saved and loaded whole
    again = BlockCodebook.build(pictures(500), k=256)
    assert np.array_equal(again.masks, book.masks)
    book.save(tmp_path)
    loaded = BlockCodebook.load(tmp_path)
    assert np.array_equal(loaded.encode(held[0]), book.encode(held[0]))


def test_a_codebook_that_holds_every_mask_is_exact():
    pics = pictures(200)
    book = BlockCodebook.build(pics, k=10_000)
    assert all(np.array_equal(book.decode(book.encode(p)), p) for p in pics[:50]
               if all(len(set(s) - {0}) <= 1 for s in blocks(p, 4)))


def test_bad_tokens_and_sizes_are_refused():
    book = BlockCodebook(np.ones((3, 16), bool))
    with pytest.raises(ValueError, match="144 tokens"):
        book.decode(np.zeros(10, np.int64))
    with pytest.raises(ValueError, match="144 tokens"):
        book.decode(np.full(144, book.vocab_size))
    with pytest.raises(ValueError, match="48 x 48"):
        book.encode(np.zeros((32, 32), np.uint8))
    assert len(PALETTE) == 7
