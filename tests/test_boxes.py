"""Boxes (:mod:`plait.vision.boxes`) and detection / segmentation metrics
(:mod:`plait.evaluation.detection`), each checked against a hand-computed value or a brute
force: IoU / GIoU, box formats, Hungarian matching, mask boxes, COCO AP and mean IoU."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from plait.evaluation.detection import (
    COCO_THRESHOLDS,
    average_precision,
    confusion_matrix,
    iou_matrix,
    mask_iou_matrix,
    mean_average_precision,
    mean_iou,
)
from plait.vision.boxes import (
    box_area,
    box_iou,
    cxcywh_to_xyxy,
    generalized_box_iou,
    hungarian_match,
    masks_to_boxes,
    xyxy_to_cxcywh,
)


def t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def random_boxes(n: int, gen: torch.Generator, degenerate: bool = False) -> torch.Tensor:
    low = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 10
    size = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 5
    if degenerate:
        size[::3] = 0.0
    return torch.cat([low, low + size], -1)


def raster(box: list[int], size: int = 12) -> np.ndarray:
    """(size, size) mask of an integer box's pixels."""
    m = np.zeros((size, size), dtype=bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


# -- IoU / GIoU ------------------------------------------------------------------------------
# (a, b, IoU, GIoU), by hand: |A ∩ B|, |A ∪ B|, |C| -> IoU = I / U, GIoU = IoU - (C - U) / C
PAIRS = [
    ([0, 0, 2, 2], [0, 0, 2, 2], 1.0, 1.0),                  # identical
    ([0, 0, 1, 1], [2, 0, 3, 1], 0.0, -1 / 3),               # disjoint: I 0, U 2, C 3
    ([0, 0, 4, 4], [1, 1, 3, 3], 0.25, 0.25),                # inside: I 4, U 16, C 16
    ([0, 0, 1, 1], [1, 0, 2, 1], 0.0, 0.0),                  # touching: I 0, U 2, C 2
    ([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7, 1 / 7 - 2 / 9),      # corner overlap: I 1, U 7, C 9
    ([0, 0, 1, 1], [3, 3, 4, 4], 0.0, -7 / 8),               # diagonal apart: U 2, C 16
]


@pytest.mark.parametrize(("a", "b", "iou", "giou"), PAIRS)
def test_iou_and_giou_of_hand_computed_pairs(a, b, iou, giou):
    for x, y in ((a, b), (b, a)):
        assert box_iou(t(x), t(y)).item() == pytest.approx(iou, abs=1e-12)
        assert generalized_box_iou(t(x), t(y)).item() == pytest.approx(giou, abs=1e-12)
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(iou, abs=1e-12)


def test_box_area_and_pairwise_shapes():
    a = t([0, 0, 2, 3], [1, 1, 1, 5])
    assert box_area(a).tolist() == [6.0, 0.0]
    assert box_area(a[None]).shape == (1, 2)
    b = t([0, 0, 1, 1], [0, 0, 2, 2], [5, 5, 6, 6])
    assert box_iou(a, b).shape == (2, 3) and generalized_box_iou(a, b).shape == (2, 3)


def test_iou_of_integer_boxes_equals_pixel_counts():
    rng = np.random.default_rng(0)
    corners = np.sort(rng.integers(0, 12, size=(30, 2, 2)), axis=1)  # (n, lo/hi, x/y)
    boxes = np.concatenate([corners[:, 0], corners[:, 1]], axis=1)  # [x0, y0, x1, y1]
    masks = np.stack([raster(list(b)) for b in boxes])
    flat = masks.reshape(len(masks), -1)
    inter = (flat[:, None] & flat[None]).sum(-1)
    union = (flat[:, None] | flat[None]).sum(-1)
    brute = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    got = box_iou(torch.from_numpy(boxes).double(), torch.from_numpy(boxes).double()).numpy()
    np.testing.assert_allclose(got, brute, atol=1e-12)
    np.testing.assert_allclose(iou_matrix(boxes, boxes), brute, atol=1e-12)
    np.testing.assert_allclose(mask_iou_matrix(masks, masks), brute, atol=1e-12)


def test_giou_is_symmetric_bounded_and_below_iou_on_random_boxes():
    gen = torch.Generator().manual_seed(0)
    a, b = random_boxes(40, gen, degenerate=True), random_boxes(30, gen, degenerate=True)
    g, i = generalized_box_iou(a, b), box_iou(a, b)
    assert torch.isfinite(g).all() and torch.isfinite(i).all()
    torch.testing.assert_close(g, generalized_box_iou(b, a).T)
    torch.testing.assert_close(i, box_iou(b, a).T)
    assert (g >= -1).all() and (g <= 1).all()
    assert (i >= 0).all() and (i <= 1).all()
    assert (g <= i + 1e-12).all()
    np.testing.assert_allclose(iou_matrix(a.numpy(), b.numpy()), i.numpy(), atol=1e-12)


def test_degenerate_boxes_give_zero_not_nan():
    point = t([1, 1, 1, 1])
    assert box_iou(point, point).item() == 0.0
    assert generalized_box_iou(point, point).item() == 0.0
    # two points apart: U = 0, C = 1 -> GIoU = 0 - (1 - 0) / 1
    assert generalized_box_iou(point, t([2, 2, 2, 2])).item() == pytest.approx(-1.0)
    assert iou_matrix(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]]))[0, 0] == 0.0


@pytest.mark.parametrize(("a", "b"), [
    ([0.1, 0.2, 0.5, 0.6], [0.1, 0.2, 0.5, 0.6]),  # identical
    ([0.3, 0.3, 0.3, 0.3], [0.3, 0.3, 0.3, 0.3]),  # identical points
    ([0.3, 0.3, 0.3, 0.7], [0.1, 0.2, 0.5, 0.6]),  # a segment against a box
    ([0.2, 0.2, 0.2, 0.2], [0.6, 0.6, 0.6, 0.6]),  # points apart
])
def test_giou_loss_gradient_is_finite(a, b):
    for dtype in (torch.float32, torch.float64):
        pa = torch.tensor([a], dtype=dtype, requires_grad=True)
        pb = torch.tensor([b], dtype=dtype, requires_grad=True)
        loss = (1 - generalized_box_iou(pa, pb).diagonal()).sum()
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(pa.grad).all() and torch.isfinite(pb.grad).all()


def test_giou_gradient_pulls_disjoint_boxes_together():
    a = t([0, 0, 1, 1]).requires_grad_()
    (1 - generalized_box_iou(a, t([2, 0, 3, 1]))).sum().backward()
    assert a.grad[0, 2] < 0  # increasing x1 lowers the loss


def test_cxcywh_round_trip():
    gen = torch.Generator().manual_seed(1)
    b = random_boxes(50, gen).reshape(5, 10, 4)
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b)
    assert xyxy_to_cxcywh(t([1, 2, 5, 8])).tolist() == [[3.0, 5.0, 4.0, 6.0]]
    assert cxcywh_to_xyxy(t([3, 5, 4, 6])).tolist() == [[1.0, 2.0, 5.0, 8.0]]


# -- Hungarian matching ----------------------------------------------------------------------
def brute_force_min(cost: np.ndarray) -> float:
    q, n = cost.shape
    perms = itertools.permutations
    if q >= n:  # every target gets a distinct prediction
        return min(sum(cost[p[j], j] for j in range(n)) for p in perms(range(q), n))
    return min(sum(cost[i, p[i]] for i in range(q)) for p in perms(range(n), q))


@pytest.mark.parametrize("shape", [(4, 4), (6, 3), (3, 5), (1, 1), (5, 1)])
def test_hungarian_match_reaches_the_brute_force_minimum(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    for _ in range(10):
        cost = torch.rand(shape, generator=gen, dtype=torch.float64) * 10 - 3
        rows, cols = hungarian_match(cost)
        assert rows.dtype == torch.int64 and cols.dtype == torch.int64
        assert len(rows) == len(cols) == min(shape)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert ((rows >= 0) & (rows < shape[0])).all() and ((cols >= 0) & (cols < shape[1])).all()
        assert rows.tolist() == sorted(rows.tolist())
        total = float(cost[rows, cols].sum())
        assert abs(total - brute_force_min(cost.numpy())) < 1e-9


def test_hungarian_match_takes_float32_with_grad_and_empty_sides():
    cost = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    rows, cols = hungarian_match(cost * 2)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    for shape in ((5, 0), (0, 3), (0, 0)):
        rows, cols = hungarian_match(torch.zeros(shape))
        assert rows.shape == cols.shape == (0,)
        assert rows.dtype == cols.dtype == torch.int64


# -- masks to boxes --------------------------------------------------------------------------
def test_masks_to_boxes_on_hand_drawn_masks():
    masks = torch.zeros(5, 5, 6, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True  # rows 1-2, columns 2-4
    masks[1, 0, 0] = True  # one pixel in the corner
    masks[2] = True  # everything
    masks[3, 4, 1] = masks[3, 2, 5] = True  # two pixels: columns 1..5, rows 2..4
    # masks[4] empty
    expected = [[2, 1, 5, 3], [0, 0, 1, 1], [0, 0, 6, 5], [1, 2, 6, 5], [0, 0, 0, 0]]
    got = masks_to_boxes(masks)
    assert got.dtype == torch.float32 and got.tolist() == expected
    assert masks_to_boxes(torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (0, 4)


def test_masks_to_boxes_inverts_rasterizing_a_box():
    rng = np.random.default_rng(2)
    corners = np.sort(rng.integers(0, 13, size=(40, 2, 2)), axis=1)
    corners[:, 1] = np.maximum(corners[:, 1], corners[:, 0] + 1)  # non-empty
    corners = np.minimum(corners, 12)
    boxes = np.concatenate([corners[:, 0], corners[:, 1]], axis=1)
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    masks = torch.from_numpy(np.stack([raster(list(b)) for b in boxes]))
    assert masks_to_boxes(masks).numpy().astype(int).tolist() == boxes.tolist()


# -- average precision -----------------------------------------------------------------------
def box(x: float, w: float = 10.0) -> np.ndarray:
    """A 10-high box from ``x`` to ``x + w`` (far-apart ``x`` never overlap)."""
    return np.array([x, 0.0, x + w, 10.0])


def test_perfect_detections_give_ap_one():
    gts = [[("cat", box(0)), ("dog", box(50))], [("cat", box(100))]]
    dets = [[("cat", 0.3, box(0)), ("dog", 0.9, box(50))], [("cat", 0.8, box(100))]]
    out = average_precision(dets, gts, 0.5)
    assert out == {"mAP": 1.0, "AP/cat": 1.0, "AP/dog": 1.0}
    assert mean_average_precision(dets, gts, COCO_THRESHOLDS) == 1.0


def test_ranked_list_gives_the_hand_computed_101_point_ap():
    # 3 ground truths (two images); by score: 0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP; one GT missed.
    # recall    1/3, 1/3, 2/3, 2/3    precision 1, 1/2, 2/3, 1/2
    # monotone from the right:        1, 2/3, 2/3, 1/2
    # r = 0.00..0.33 (34 points): 1; r = 0.34..0.66 (33 points): 2/3; r = 0.67..1.00: 0
    gts = [[("a", box(0)), ("a", box(100))], [("a", box(200))]]
    dets = [[("a", 0.6, box(300)), ("a", 0.9, box(0)), ("a", 0.8, box(400))],  # input unsorted
            [("a", 0.7, box(200))]]
    expected = (34 * 1 + 33 * 2 / 3) / 101
    assert expected == pytest.approx(56 / 101)
    out = average_precision(dets, gts, 0.5)
    assert out["AP/a"] == pytest.approx(expected, abs=1e-12)
    assert out["mAP"] == pytest.approx(expected, abs=1e-12)


def test_precision_is_made_monotone_from_the_right():
    # 3 GTs; TP, FP, TP, TP: precision 1, 1/2, 2/3, 3/4 -> monotone 1, 3/4, 3/4, 3/4 with
    # recall 1/3, 1/3, 2/3, 1: r <= 0.33 (34 points) -> 1, the other 67 -> 3/4
    gts = [[("a", box(0)), ("a", box(100)), ("a", box(200))]]
    dets = [[("a", 0.9, box(0)), ("a", 0.8, box(500)), ("a", 0.7, box(100)),
             ("a", 0.6, box(200))]]
    assert average_precision(dets, gts, 0.5)["mAP"] == pytest.approx((34 + 67 * 0.75) / 101)


def test_recall_of_exactly_seven_tenths_reaches_the_point_0_70():
    # 10 GTs, 7 found with precision 1: recall reaches 0.7, so r = 0.00..0.70 (71 points) -> 1
    gts = [[("a", box(100 * k)) for k in range(10)]]
    dets = [[("a", 1.0 - k / 10, box(100 * k)) for k in range(7)]]
    assert average_precision(dets, gts, 0.5)["mAP"] == pytest.approx(71 / 101, abs=1e-12)


def test_a_duplicate_detection_is_a_false_positive():
    # GTs A, B; detections A (0.9), A again (0.8), B (0.7): TP, FP, TP
    # recall 1/2, 1/2, 1; precision 1, 1/2, 2/3 -> monotone 1, 2/3, 2/3
    # r = 0.00..0.50 (51 points) -> 1, r = 0.51..1.00 (50 points) -> 2/3
    gts = [[("a", box(0)), ("a", box(100))]]
    dets = [[("a", 0.9, box(0)), ("a", 0.8, box(0.5)), ("a", 0.7, box(100))]]
    assert average_precision(dets, gts, 0.5)["mAP"] == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_a_detection_with_the_wrong_label_does_not_match():
    gts = [[("cat", box(0))]]
    out = average_precision([[("dog", 0.9, box(0))]], gts, 0.5)
    assert out == {"mAP": 0.0, "AP/cat": 0.0}


def test_a_detection_in_another_image_does_not_match():
    gts = [[("cat", box(0))], []]
    assert average_precision([[], [("cat", 0.9, box(0))]], gts, 0.5)["mAP"] == 0.0


@pytest.mark.parametrize(("width", "ap"), [(4.99, 0.0), (5.0, 1.0), (5.01, 1.0)])
def test_iou_threshold_is_inclusive(width, ap):
    # GT 10 x 10, detection 10 x width inside it: IoU = width / 10
    gts = [[("a", np.array([0.0, 0.0, 10.0, 10.0]))]]
    dets = [[("a", 0.9, np.array([0.0, 0.0, 10.0, width]))]]
    assert average_precision(dets, gts, 0.5)["mAP"] == ap


def test_each_detection_takes_the_unmatched_ground_truth_of_best_iou():
    # GT1 [0, 10], GT2 [1, 11]. det1 = GT2 (0.9): IoU 9/11 with GT1, 1 with GT2 -> GT2.
    # det2 [-1, 9] (0.8): IoU 9/11 = 0.818 with GT1, 8/12 = 0.667 with GT2 -> GT1 at 0.75.
    # Taking the first GT above the threshold instead would leave det2 a false positive.
    gts = [[("a", box(0)), ("a", box(1))]]
    dets = [[("a", 0.9, box(1)), ("a", 0.8, box(-1))]]
    assert average_precision(dets, gts, 0.75)["mAP"] == 1.0


def test_classes_without_ground_truth_are_skipped():
    gts = [[("cat", box(0))], [("dog", box(0))]]
    dets = [[("cat", 0.9, box(0)), ("bird", 0.95, box(200))], [("bird", 0.5, box(0))]]
    out = average_precision(dets, gts, 0.5)
    assert set(out) == {"mAP", "AP/cat", "AP/dog"}
    assert out["AP/cat"] == 1.0 and out["AP/dog"] == 0.0 and out["mAP"] == 0.5
    assert np.isnan(average_precision([[("cat", 0.9, box(0))]], [[]], 0.5)["mAP"])


def test_coco_map_averages_over_the_ten_thresholds():
    assert COCO_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    # IoU 0.72 passes 0.5 .. 0.7 (5 of 10 thresholds)
    gts = [[("a", np.array([0.0, 0.0, 100.0, 1.0]))]]
    dets = [[("a", 0.9, np.array([0.0, 0.0, 72.0, 1.0]))]]
    assert mean_average_precision(dets, gts, COCO_THRESHOLDS) == pytest.approx(0.5)
    assert mean_average_precision(dets, gts) == 1.0


def test_mask_regions_work_through_mask_iou_matrix():
    a, b = raster([0, 0, 4, 4]), raster([6, 6, 10, 10])
    half = raster([0, 0, 4, 2])  # IoU 8 / 16 with a
    np.testing.assert_allclose(mask_iou_matrix(np.stack([a, half]), np.stack([a, b])),
                               [[1.0, 0.0], [0.5, 0.0]])
    gts = [[("x", a), ("y", b)]]
    dets = [[("x", 0.9, half), ("y", 0.8, b)]]
    assert average_precision(dets, gts, 0.5, iou=mask_iou_matrix)["AP/x"] == 1.0
    out = average_precision(dets, gts, 0.6, iou=mask_iou_matrix)
    assert out == {"mAP": 0.5, "AP/x": 0.0, "AP/y": 1.0}


# -- segmentation ----------------------------------------------------------------------------
def test_mean_iou_by_hand_leaves_out_absent_classes():
    confusion = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    # class 0: 5 / (5 + 1 + 2); class 1: 3 / (3 + 2 + 1); class 2: never seen -> NaN
    miou, per_class = mean_iou(confusion)
    assert per_class[:2].tolist() == [5 / 8, 1 / 2] and np.isnan(per_class[2])
    assert miou == pytest.approx((5 / 8 + 1 / 2) / 2)
    # a class only predicted (never true) counts, with IoU 0
    miou, per_class = mean_iou(np.array([[4, 1], [0, 0]]))
    assert per_class.tolist() == [0.8, 0.0] and miou == pytest.approx(0.4)


def test_confusion_matrix_equals_a_double_loop_count():
    rng = np.random.default_rng(3)
    pred, target = rng.integers(0, 4, size=(3, 7, 5)), rng.integers(0, 4, size=(3, 7, 5))
    expected = np.zeros((4, 4), dtype=np.int64)
    for t_, p_ in zip(target.ravel(), pred.ravel(), strict=True):
        expected[t_, p_] += 1
    got = confusion_matrix(pred, target, 4)
    assert got.dtype == np.int64 and (got == expected).all() and got.sum() == pred.size
    assert confusion_matrix(np.array([0, 1]), np.array([1, 1]), 3).tolist() == [
        [0, 0, 0], [1, 1, 0], [0, 0, 0]]  # rows target, columns prediction
    with pytest.raises(ValueError):
        confusion_matrix(np.array([3]), np.array([0]), 3)
