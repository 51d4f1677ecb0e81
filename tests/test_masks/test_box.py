"""FGD foreground / background box masks against explicit loops.

The reference below rasterises box by box and cell by cell, following the
rule documented in ``mmdistill.masks.box`` (the official FGD code's): a box
covers the inclusive cell ranges floor(x1 * w / W_in) .. ceil(x2 * w / W_in)
(and likewise rows), its value is 1 / area with the unclipped area
(rows + 1) * (cols + 1), overlaps keep the larger value.
"""
import math

import pytest
import torch

from mmdistill.masks import box_masks


def _ref_masks(bboxes, shapes, h, w):
    n = len(bboxes)
    fg = torch.zeros(n, h, w, dtype=torch.float64)
    bg = torch.zeros(n, h, w, dtype=torch.float64)
    for i in range(n):
        h_in, w_in = shapes[i]
        for box in bboxes[i].tolist():
            x1 = math.floor(box[0] / w_in * w)
            x2 = math.ceil(box[2] / w_in * w)
            y1 = math.floor(box[1] / h_in * h)
            y2 = math.ceil(box[3] / h_in * h)
            value = 1.0 / ((y2 + 1 - y1) * (x2 + 1 - x1))
            for y in range(h):
                for x in range(w):
                    if y1 <= y <= y2 and x1 <= x <= x2:
                        fg[i, y, x] = max(fg[i, y, x].item(), value)
        free = [(y, x) for y in range(h) for x in range(w)
                if fg[i, y, x] == 0]
        for y, x in free:
            bg[i, y, x] = 1.0 / len(free)
    return fg, bg


def _random_boxes(k, h_in, w_in, gen):
    xy = torch.rand(k, 2, generator=gen, dtype=torch.float64)
    wh = torch.rand(k, 2, generator=gen, dtype=torch.float64) * 0.6
    x1 = xy[:, 0] * w_in * 0.9
    y1 = xy[:, 1] * h_in * 0.9
    x2 = (x1 + wh[:, 0] * w_in).clamp(max=w_in)
    y2 = (y1 + wh[:, 1] * h_in).clamp(max=h_in)
    return torch.stack([x1, y1, x2, y2], dim=1)


def test_matches_loops_on_random_boxes():
    gen = torch.Generator().manual_seed(0)
    shape = (96, 128)  # (H_in, W_in), non-square
    boxes = [_random_boxes(k, *shape, gen) for k in (1, 4, 9)]
    for h, w in [(12, 16), (6, 8), (3, 4), (1, 1)]:
        fg, bg = box_masks(boxes, shape, (h, w), dtype=torch.float64)
        ref_fg, ref_bg = _ref_masks(boxes, [shape] * 3, h, w)
        assert fg.shape == bg.shape == (3, h, w)
        assert fg.dtype == bg.dtype == torch.float64
        torch.testing.assert_close(fg, ref_fg, rtol=1e-6, atol=0)
        torch.testing.assert_close(bg, ref_bg, rtol=1e-6, atol=0)


def test_per_image_shapes():
    gen = torch.Generator().manual_seed(1)
    shapes = [(64, 64), (64, 128)]
    boxes = [_random_boxes(3, *s, gen) for s in shapes]
    fg, bg = box_masks(boxes, shapes, (8, 8), dtype=torch.float64)
    ref_fg, ref_bg = _ref_masks(boxes, shapes, 8, 8)
    torch.testing.assert_close(fg, ref_fg, rtol=1e-6, atol=0)
    torch.testing.assert_close(bg, ref_bg, rtol=1e-6, atol=0)


def test_known_box_and_isolated_sum():
    # stride 8: x in [8, 24] -> cells floor(1) .. ceil(3), i.e. 1..3
    boxes = [torch.tensor([[8.0, 8.0, 24.0, 24.0]])]
    fg, bg = box_masks(boxes, (128, 128), (16, 16))
    expected = torch.zeros(16, 16)
    expected[1:4, 1:4] = 1.0 / 9
    torch.testing.assert_close(fg[0], expected, rtol=1e-6, atol=0)
    assert torch.isclose(fg[0].sum(), torch.tensor(1.0))
    # a fractional box: x 13.6..41.2 -> cols 1..6 (6), y 30..50 -> rows 3..7
    boxes = [torch.tensor([[13.6, 30.0, 41.2, 50.0]], dtype=torch.float64)]
    fg, _ = box_masks(boxes, (128, 128), (16, 16), dtype=torch.float64)
    assert (fg[0] > 0).sum() == 30
    assert torch.allclose(fg[0][fg[0] > 0],
                          torch.tensor(1.0 / 30, dtype=torch.float64))
    assert torch.isclose(fg[0].sum(), torch.tensor(1.0, dtype=torch.float64))


def test_rows_are_y_and_columns_are_x():
    boxes = [torch.tensor([[0.0, 64.0, 16.0, 80.0]])]  # wide x range low
    fg, _ = box_masks(boxes, (128, 128), (16, 16))
    ys, xs = torch.nonzero(fg[0], as_tuple=True)
    assert ys.min() == 8 and ys.max() == 10
    assert xs.min() == 0 and xs.max() == 2


def test_overlap_keeps_larger_value():
    big = [16.0, 16.0, 80.0, 80.0]  # cells 2..10 -> 81 cells
    small = [40.0, 40.0, 56.0, 56.0]  # cells 5..7 -> 9 cells
    for order in ([big, small], [small, big]):
        fg, bg = box_masks([torch.tensor(order)], (128, 128), (16, 16),
                           dtype=torch.float64)
        assert torch.allclose(fg[0, 5:8, 5:8],
                              torch.tensor(1.0 / 9, dtype=torch.float64))
        assert torch.isclose(fg[0, 2, 2],
                             torch.tensor(1.0 / 81, dtype=torch.float64))
        assert torch.isclose(fg[0, 10, 4],
                             torch.tensor(1.0 / 81, dtype=torch.float64))
        assert fg[0, 11, 11] == 0 and fg[0, 1, 5] == 0
        assert torch.all(bg[0][fg[0] > 0] == 0)


def test_background_sums_to_one_and_is_uniform():
    gen = torch.Generator().manual_seed(2)
    boxes = [_random_boxes(k, 128, 128, gen) for k in (1, 2, 5)]
    fg, bg = box_masks(boxes, (128, 128), (16, 16), dtype=torch.float64)
    torch.testing.assert_close(bg.sum(dim=(1, 2)),
                               torch.ones(3, dtype=torch.float64))
    for i in range(3):
        free = fg[i] == 0
        assert torch.all((bg[i] > 0) == free)
        assert torch.allclose(bg[i][free],
                              torch.tensor(1.0 / free.sum().item(),
                                           dtype=torch.float64))


def test_image_without_boxes():
    boxes = [torch.zeros(0, 4), torch.tensor([[8.0, 8.0, 24.0, 24.0]])]
    fg, bg = box_masks(boxes, (128, 128), (16, 16))
    assert torch.all(fg[0] == 0)
    assert torch.allclose(bg[0], torch.full((16, 16), 1.0 / 256))
    assert torch.isclose(bg[1].sum(), torch.tensor(1.0))
    # all images empty
    fg, bg = box_masks([torch.zeros(0, 4)], (64, 32), (8, 4))
    assert torch.all(fg == 0)
    assert torch.allclose(bg, torch.full((1, 8, 4), 1.0 / 32))


def test_boxes_touching_the_border():
    # right/bottom border: x2 = W_in -> ceil = w, one column past the map;
    # the area counts it (official rule), the mask holds the in-map cells.
    box = torch.tensor([[100.0, 96.0, 128.0, 128.0]], dtype=torch.float64)
    fg, bg = box_masks([box], (128, 128), (16, 16), dtype=torch.float64)
    # cols floor(12.5)=12 .. 16, rows 12 .. 16: area 5 * 5 = 25
    expected = torch.zeros(16, 16, dtype=torch.float64)
    expected[12:, 12:] = 1.0 / 25
    torch.testing.assert_close(fg[0], expected, rtol=1e-6, atol=0)
    assert torch.isclose(fg[0].sum(),
                         torch.tensor(16.0 / 25, dtype=torch.float64))
    assert torch.isclose(bg[0].sum(), torch.tensor(1.0, dtype=torch.float64))
    # left/top border: x1 = 0 -> column 0, nothing lost
    box = torch.tensor([[0.0, 0.0, 16.0, 16.0]], dtype=torch.float64)
    fg, _ = box_masks([box], (128, 128), (16, 16), dtype=torch.float64)
    assert torch.isclose(fg[0].sum(), torch.tensor(1.0, dtype=torch.float64))
    assert fg[0, 0, 0] == 1.0 / 9
    # a box over the whole image: no background left, no NaN
    box = torch.tensor([[0.0, 0.0, 128.0, 128.0]])
    fg, bg = box_masks([box], (128, 128), (16, 16))
    assert torch.allclose(fg[0], torch.full((16, 16), 1.0 / 289))
    assert torch.all(bg == 0) and not torch.isnan(bg).any()
    # out-of-range coordinates are clipped to the map like the loops do
    box = torch.tensor([[-10.0, -4.0, 140.0, 60.0]], dtype=torch.float64)
    fg, bg = box_masks([box], (128, 128), (16, 16), dtype=torch.float64)
    ref_fg, ref_bg = _ref_masks([box], [(128, 128)], 16, 16)
    torch.testing.assert_close(fg, ref_fg, rtol=1e-6, atol=0)
    torch.testing.assert_close(bg, ref_bg, rtol=1e-6, atol=0)


def test_retinanet_fpn_levels():
    gen = torch.Generator().manual_seed(3)
    boxes = [_random_boxes(k, 128, 128, gen) for k in (3, 0)]
    for stride in (8, 16, 32, 64, 128):
        size = 128 // stride
        fg, bg = box_masks(boxes, (128, 128), (size, size))
        assert fg.shape == bg.shape == (2, size, size)
        assert torch.all(fg[1] == 0)
        assert torch.isclose(bg[1].sum(), torch.tensor(1.0))
        assert not torch.isnan(bg).any()
        ref_fg, ref_bg = _ref_masks(boxes, [(128, 128)] * 2, size, size)
        torch.testing.assert_close(fg.double(), ref_fg, rtol=1e-6, atol=0)
        torch.testing.assert_close(bg.double(), ref_bg, rtol=1e-6, atol=0)


def test_accepts_mmdet_horizontal_boxes():
    structures = pytest.importorskip('mmdet.structures.bbox')
    t = torch.tensor([[8.0, 8.0, 24.0, 24.0]])
    fg_a, bg_a = box_masks([structures.HorizontalBoxes(t)], (128, 128),
                           (16, 16))
    fg_b, bg_b = box_masks([t], (128, 128), (16, 16))
    assert torch.equal(fg_a, fg_b) and torch.equal(bg_a, bg_b)


def test_bad_boxes():
    with pytest.raises(ValueError):
        box_masks([torch.zeros(3, 5)], (64, 64), (8, 8))
    with pytest.raises(ValueError):
        box_masks([torch.zeros(0, 4)] * 3, [(64, 64)] * 2, (8, 8))


# ------------------------------------- several levels, one rasterisation ---
from mmdistill.masks import BoxMaskCache, box_masks_levels, pad_boxes  # noqa


def test_all_levels_from_one_rasterisation_match_the_loops():
    gen = torch.Generator().manual_seed(4)
    shape = (96, 160)
    boxes = [_random_boxes(k, *shape, gen) for k in (5, 0, 2)]
    boxes[2][0] = torch.tensor([0.0, 0.0, 160.0, 96.0])  # the whole image
    sizes = [(12, 20), (6, 10), (3, 5), (2, 3), (1, 1)]
    masks = box_masks_levels(pad_boxes(boxes, shape), sizes, torch.float64)
    assert len(masks) == len(sizes)
    for (h, w), (fg, bg) in zip(sizes, masks):
        ref_fg, ref_bg = _ref_masks(boxes, [shape] * 3, h, w)
        torch.testing.assert_close(fg, ref_fg, rtol=1e-6, atol=0)
        torch.testing.assert_close(bg, ref_bg, rtol=1e-6, atol=0)
        # bit-identical to one level at a time
        one_fg, one_bg = box_masks(boxes, shape, (h, w), torch.float64)
        assert torch.equal(fg, one_fg) and torch.equal(bg, one_bg)
        assert torch.all(fg[1] == 0)  # the image without boxes
        assert torch.allclose(bg[1], torch.full((h, w), 1.0 / (h * w),
                                                dtype=torch.float64))
        assert torch.all(bg[2] == 0)  # covered everywhere: no background


def test_padding_and_validity():
    boxes = [torch.zeros(0, 4), torch.tensor([[1.0, 2.0, 3.0, 4.0]] * 3),
             torch.tensor([[40, 40, 48, 48]])]  # integers become float32
    padded = pad_boxes(boxes, (64, 64))
    assert padded.boxes.shape == (3, 3, 4)
    assert padded.boxes.dtype == torch.float32
    assert padded.valid.tolist() == [[False] * 3, [True] * 3,
                                     [True, False, False]]
    assert padded.input_shape == (64, 64)
    # padded rows never mark cells: a padding row of zeros would cover
    # cell (0, 0) if it counted
    fg, _ = box_masks_levels(padded, [(8, 8)])[0]
    assert torch.all(fg[0] == 0) and fg[2, 0, 0] == 0
    # per-image input shapes become an (N, 1, 2) tensor
    padded = pad_boxes(boxes, [(64, 64), (64, 32), (32, 64)])
    assert padded.input_shape.shape == (3, 1, 2)
    assert padded.input_shape[:, 0].tolist() == [[64, 64], [64, 32],
                                                 [32, 64]]
    # no image and no box at all
    fg, bg = box_masks([], (64, 64), (4, 4))
    assert fg.shape == bg.shape == (0, 4, 4)


def test_masks_read_nothing_back_to_the_host(monkeypatch):
    """No .item(), bool(tensor), nonzero or boolean-mask indexing: the
    masks can be built on a GPU without waiting for it."""
    calls = []
    for name in ('item', 'tolist', 'cpu', '__bool__', 'nonzero',
                 '__float__', '__int__', '__index__'):
        original = getattr(torch.Tensor, name)

        def wrapped(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    gen = torch.Generator().manual_seed(5)
    boxes = [_random_boxes(k, 128, 128, gen) for k in (3, 0)]
    boxes.append(torch.tensor([[0.0, 0.0, 128.0, 128.0]]))
    box_masks(boxes, (128, 128), (16, 16))
    box_masks(boxes, [(128, 128)] * 2 + [(96, 128)], (16, 16))
    box_masks_levels(pad_boxes(boxes, (128, 128)), [(16, 16), (8, 8)])
    monkeypatch.undo()
    assert calls == []


def test_cache_rasterises_the_levels_of_a_batch_once():
    gen = torch.Generator().manual_seed(6)
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]

    def batch():
        boxes = [_random_boxes(k, 128, 128, gen) for k in (3, 1)]
        return [object(), object()], boxes

    cache = BoxMaskCache()
    for step in range(3):
        samples, boxes = batch()
        for size in sizes:
            fg, bg = cache.get(samples, boxes, [(128, 128)] * 2, size,
                               torch.float64)
            ref_fg, ref_bg = box_masks(boxes, (128, 128), size,
                                       torch.float64)
            assert torch.equal(fg, ref_fg) and torch.equal(bg, ref_bg)
        # the first batch learns the five sizes level by level; later
        # batches with that input shape rasterise them all at once
        assert cache.rasterisations == 5 + step
    # boxes changed in place: not served stale masks
    fg_before, _ = cache.get(samples, boxes, [(128, 128)] * 2, (16, 16),
                             torch.float64)
    boxes[0].mul_(0.5)
    fg, _ = cache.get(samples, boxes, [(128, 128)] * 2, (16, 16),
                      torch.float64)
    assert torch.equal(fg, box_masks(boxes, (128, 128), (16, 16),
                                     torch.float64)[0])
    assert not torch.equal(fg, fg_before)
    # another dtype is another set of masks
    fg32, _ = cache.get(samples, boxes, [(128, 128)] * 2, (16, 16))
    assert fg32.dtype == torch.float32
    # a new input shape: its sizes are learned anew
    count = cache.rasterisations
    samples, boxes = batch()
    cache.get(samples, boxes, [(64, 64)] * 2, (8, 8))
    assert cache.rasterisations == count + 1


def test_degenerate_boxes_mark_nothing_and_give_no_nan():
    """Inverted, zero-area and outside boxes (a zero-area range would give
    1 / 0) add no foreground; the masks stay finite."""
    boxes = [torch.tensor([[50.0, 50.0, 10.0, 10.0],     # inverted
                           [30.0, 30.0, 12.0, 30.0],     # inverted in x
                           [-50.0, -50.0, -20.0, -20.0],  # before the map
                           [140.0, 140.0, 180.0, 180.0]]),  # past the map
             torch.tensor([[8.0, 8.0, 24.0, 24.0], [60.0, 60.0, 8.0, 8.0]])]
    fg, bg = box_masks(boxes, (128, 128), (16, 16))
    assert torch.isfinite(fg).all() and torch.isfinite(bg).all()
    assert torch.all(fg[0] == 0)
    assert torch.allclose(bg[0], torch.full((16, 16), 1.0 / 256))
    expected = torch.zeros(16, 16)
    expected[1:4, 1:4] = 1.0 / 9
    assert torch.equal(fg[1], expected)


def test_cache_does_not_keep_a_batch_alive():
    import gc
    import weakref

    class Sample:
        pass

    cache = BoxMaskCache()
    samples = [Sample(), Sample()]
    boxes = [torch.tensor([[8.0, 8.0, 24.0, 24.0]]), torch.zeros(0, 4)]
    cache.get(samples, boxes, [(128, 128)] * 2, (16, 16))
    alive = weakref.ref(samples[0]), weakref.ref(boxes[0])
    del samples, boxes
    gc.collect()
    assert alive[0]() is None and alive[1]() is None
    # a new batch (possibly at the freed ids) gets its own masks
    boxes = [torch.tensor([[64.0, 64.0, 80.0, 80.0]]), torch.zeros(0, 4)]
    fg, _ = cache.get([Sample(), Sample()], boxes, [(128, 128)] * 2,
                      (16, 16))
    assert torch.equal(fg, box_masks(boxes, (128, 128), (16, 16))[0])
