"""Detection and segmentation of the shape scenes: exact targets, the models' shapes and
anchors, the set loss's matching, the recipes end to end on tiny models (`plait eval`,
`plait detect`, `plait segment`), and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from plait.cli.main import main
from plait.data import detect as data
from plait.data.scenes import BACKGROUND, HELDOUT_PAIRS, Shape
from plait.models.detect import Detector, DetectorConfig, grid_points
from plait.models.segment import Segmenter, SegmenterConfig
from plait.training import recipe_from_dict, train

TINY_VIT = {"patch_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 32, "pooling": "mean",
            "pos_embedding": "sincos2d", "norm_eps": 1e-5}
FAST = {"max_steps": 3, "warmup_steps": 1, "eval_interval": 0, "threads": 1, "progress": False,
        "device": "cpu", "lr": 1e-3}


# -- targets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "heldout"])
def test_the_class_map_is_exactly_the_pictures_shape_pixels(split):
    for i in range(20):
        ex = data.example(i, split, 0, 48)
        pixels = np.asarray(ex.image)
        drawn = (pixels != np.array(BACKGROUND)).any(-1)
        assert np.array_equal(drawn, ex.classes > 0)
        for lab, m in zip(ex.labels, ex.masks, strict=True):  # each mask shows its colour
            colour = lab.split(" ")[0]
            assert (ex.classes[m] == 1 + data.LABELS.index(lab)).all()
            assert len({tuple(p) for p in pixels[m]}) == 1, colour


def test_boxes_are_the_tight_pixel_edges_of_each_shape():
    s = Shape("square", "red", "large", 0.5, 0.5)
    (box,) = data.tight_boxes(data.shape_masks([s], 48))
    mask = data.shape_masks([s], 48)[0]
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert box.tolist() == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    assert box[2] - box[0] == pytest.approx(2 * 0.17 * 0.85 * 48, abs=1.5)  # the drawn side
    assert data.tight_boxes(np.zeros((1, 4, 4), dtype=bool)).tolist() == [[0, 0, 0, 0]]


def test_a_covered_shape_keeps_its_whole_box_and_shows_only_its_visible_pixels():
    a, b = Shape("square", "red", "large", 0.4, 0.5), Shape("circle", "blue", "large", 0.6, 0.5)
    own, seen = data.shape_masks([a, b], 48), data.visible_masks([a, b], 48)
    assert (seen[0] & own[1]).sum() == 0 and seen[0].sum() < own[0].sum()
    assert np.array_equal(seen[1], own[1])


def test_held_out_scenes_hold_a_held_out_pair_and_training_scenes_none():
    for i in range(50):
        train_pairs = {tuple(lab.split(" ")) for lab in data.example(i, "train", 0, 48).labels}
        held_pairs = {tuple(lab.split(" ")) for lab in data.example(i, "heldout", 0, 48).labels}
        assert not train_pairs & HELDOUT_PAIRS and held_pairs & HELDOUT_PAIRS


# -- models ----------------------------------------------------------------------------------
def test_detector_outputs_one_box_per_query_near_its_anchor():
    torch.manual_seed(0)
    m = Detector(DetectorConfig(vision=TINY_VIT, n_embd=32, n_head=2, n_layer=1)).eval()
    out = m(torch.randn(2, 3, 48, 48))
    assert out["objectness"].shape == (2, 9) and out["colour"].shape == (2, 9, 6)
    assert out["kind"].shape == (2, 9, 4) and out["boxes"].shape == (2, 9, 4)
    centre = (out["boxes"][..., :2] + out["boxes"][..., 2:]) / 2
    assert ((centre - grid_points(3)).abs() <= 1 / 3 + 1e-6).all()  # within one anchor spacing
    assert (out["boxes"][..., 2:] >= out["boxes"][..., :2]).all()
    dets = m.detect(torch.randn(1, 3, 48, 48))[0]
    assert len(dets) == 9 and [d[1] for d in dets] == sorted((d[1] for d in dets), reverse=True)


def test_box_mean_averages_the_pixels_inside_each_box():
    from plait.models.detect import box_mean

    f = torch.arange(16.0).reshape(1, 1, 4, 4)
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5],  # the top-left 2 x 2: 0 1 4 5
                           [0.0, 0.0, 1.0, 1.0],  # everything
                           [0.6, 0.6, 0.61, 0.61]]])  # no pixel centre: the nearest, (2, 2)
    assert box_mean(f, boxes)[0, :, 0].tolist() == [2.5, 7.5, 10.0]


def test_a_detectors_query_count_must_be_a_grid():
    with pytest.raises(ValueError, match="square number"):
        DetectorConfig(vision=TINY_VIT, n_queries=8)


def test_segmenter_class_ids_compose_colour_and_kind():
    torch.manual_seed(0)
    m = Segmenter(SegmenterConfig(vision=TINY_VIT, n_embd=8)).eval()
    out = m(torch.randn(1, 3, 48, 48))
    assert out["colour"].shape == (1, 7, 48, 48) and out["kind"].shape == (1, 4, 48, 48)
    colour = torch.zeros(1, 7, 2, 2)
    colour[0, 0, 0, 0] = 9  # background
    colour[0, 3, 0, 1] = colour[0, 3, 1, 0] = colour[0, 1, 1, 1] = 9  # yellow, red
    kind = torch.zeros(1, 4, 2, 2)
    kind[0, 3] = 9  # star everywhere
    m.forward = lambda x: {"colour": colour, "kind": kind}
    ids, _ = m.predict(torch.zeros(1, 3, 2, 2))
    labels = ("", *m.config.labels)
    assert [labels[i] for i in ids.flatten().tolist()] == ["", "yellow star", "yellow star",
                                                           "red star"]


def test_instances_are_the_connected_regions_of_each_class():
    m = Segmenter(SegmenterConfig(vision=TINY_VIT, n_embd=8))
    ids = torch.zeros(10, 10, dtype=torch.long)
    ids[0:3, 0:3] = 5
    ids[6:9, 6:9] = 5  # the same class twice, apart
    ids[0:2, 7:9] = 2
    ids[9, 0] = 7  # one pixel: too small to report
    prob = torch.full((10, 10), 0.5)
    prob[6:9, 6:9] = 0.9
    found = m.instances(ids, prob)
    assert [(lab, round(s, 2), int(mask.sum())) for lab, s, mask in found] == [
        (m.config.labels[4], 0.9, 9), (m.config.labels[1], 0.5, 4), (m.config.labels[4], 0.5, 9)]


# -- the set loss ----------------------------------------------------------------------------
def test_matching_gives_each_shape_the_query_that_fits_it_best(tmp_path):
    from plait.training import TrainConfig
    from plait.training.distributed import Dist
    from plait.training.tasks.detect import DetectData, DetectTask

    task = DetectTask(DetectData(), TrainConfig(out_dir=str(tmp_path)), Dist())
    batch = task.batch([data.example(i, "train", 0, 48) for i in range(3)])
    Q = 9
    out = {"objectness": torch.zeros(3, Q), "colour": torch.zeros(3, Q, 6),
           "kind": torch.zeros(3, Q, 4), "boxes": torch.rand(3, Q, 4).sort(-1).values}
    for b in range(3):  # put each shape's exact box on query 8 - j
        for j in range(int((batch["colour"][b] >= 0).sum())):
            out["boxes"][b, Q - 1 - j] = batch["boxes"][b, j]
    for q, t in task.match(out, batch):
        assert sorted(zip(t.tolist(), q.tolist(), strict=True)) == [
            (j, Q - 1 - j) for j in range(len(t))]


def test_the_detection_loss_is_its_formula_on_the_matched_pairs(tmp_path):
    from plait.training import TrainConfig
    from plait.training.distributed import Dist
    from plait.training.tasks.detect import DetectData, DetectTask
    from plait.vision.boxes import generalized_box_iou

    task = DetectTask(DetectData(), TrainConfig(out_dir=str(tmp_path)), Dist())
    batch = task.batch([data.example(i, "train", 0, 48) for i in range(2)])
    torch.manual_seed(0)
    out = {"objectness": torch.randn(2, 9), "colour": torch.randn(2, 9, 6),
           "kind": torch.randn(2, 9, 4), "boxes": torch.rand(2, 9, 4).sort(-1).values}
    model = lambda pixels: out  # noqa: E731  (the loss calls the model on the pictures)
    pairs = task.match(out, batch)
    target = torch.zeros(2, 9)
    terms = []
    for b, (q, t) in enumerate(pairs):
        target[b, q] = 1.0
        for i, j in zip(q.tolist(), t.tolist(), strict=True):
            pb, tb = out["boxes"][b, i], batch["boxes"][b, j]
            terms.append(-out["colour"][b, i].log_softmax(-1)[batch["colour"][b, j]]
                         - out["kind"][b, i].log_softmax(-1)[batch["kind"][b, j]]
                         + 5 * (pb - tb).abs().sum()
                         + 2 * (1 - generalized_box_iou(pb[None], tb[None])[0, 0]))
    p = torch.sigmoid(out["objectness"])
    bce = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    expected = bce + torch.stack(terms).mean()
    assert float(task.loss(model, batch)) == pytest.approx(float(expected), rel=1e-5)


def test_the_segmentation_loss_reads_the_kind_only_on_shape_pixels(tmp_path):
    from plait.training import TrainConfig
    from plait.training.distributed import Dist
    from plait.training.tasks.detect import DetectData
    from plait.training.tasks.segment import SegmentTask

    task = SegmentTask(DetectData(), TrainConfig(out_dir=str(tmp_path)), Dist())
    batch = task.batch([data.example(0, "train", 0, 48)])
    assert ((batch["colour"] == 0) == (batch["kind"] == -1)).all()
    torch.manual_seed(0)
    out = {"colour": torch.randn(1, 7, 48, 48), "kind": torch.randn(1, 4, 48, 48)}
    fg = batch["colour"][0] > 0
    col = -out["colour"][0].log_softmax(0).gather(0, batch["colour"])[0].mean()
    kind = -out["kind"][0].log_softmax(0).gather(0, batch["kind"].clamp(min=0))[0][fg].mean()
    assert float(task.loss(lambda x: out, batch)) == pytest.approx(float(col + kind), rel=1e-5)


# -- end to end --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    common = {"data": {"batch_size": 8, "heldout": 20},
              "train": {**FAST}}
    det = recipe_from_dict({"task": "detect", **common,
                            "model": {"arch": "detector", "n_layer": 1, "n_head": 2,
                                      "n_embd": 32, "vision": TINY_VIT},
                            "train": {**FAST, "out_dir": str(root / "detect")}})
    seg = recipe_from_dict({"task": "segment", **common,
                            "model": {"arch": "segmenter", "n_embd": 8,
                                      "vision": TINY_VIT},
                            "train": {**FAST, "out_dir": str(root / "segment")}})
    train(det)
    train(seg)
    data.example(0, "heldout", 0, 48).image.save(root / "scene.png")
    return root


@pytest.mark.parametrize("task, names", [
    ("detect", ("mAP50", "mAP", "mAP50_heldout_pairs")),
    ("segment", ("mIoU", "mIoU_heldout_pairs", "mask_AP50", "mask_AP")),
])
def test_plait_eval_reports_the_tasks_metrics(folders, capsys, task, names):
    capsys.readouterr()
    assert main(["eval", "--model", str(folders / task), "--task", task]) == 0
    out = capsys.readouterr().out
    for name in names:
        assert f"{name}  " in out, out


def test_plait_detect_prints_boxes_in_the_pictures_pixels(folders, capsys):
    big = folders / "big.png"
    Image.open(folders / "scene.png").resize((96, 144)).save(big)
    capsys.readouterr()
    assert main(["detect", "--model", str(folders / "detect"), "--threshold", "0",
                 str(folders / "scene.png"), str(big)]) == 0
    lines = capsys.readouterr().out.splitlines()
    small, large = (json.loads(line) for line in lines)
    assert len(small) == len(large) == 9 and set(small[0]) == {"label", "score", "box"}
    for found, (w, h) in ((small, (48, 48)), (large, (96, 144))):
        for d in found:
            x0, y0, x1, y1 = d["box"]
            assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h and d["label"] in data.LABELS


def test_boxes_are_mapped_back_to_the_pictures_own_pixels(folders):
    from plait.inference.scenes import ShapeDetector

    det = ShapeDetector.from_folder(folders / "detect")
    det.model.detect = lambda x: [[("red circle", 0.9, torch.tensor([0.25, 0.5, 0.5, 1.0]))]]
    (found,) = det.detect([Image.new("RGB", (96, 144))], threshold=0.5)
    assert found == [{"label": "red circle", "score": 0.9, "box": [24.0, 72.0, 48.0, 144.0]}]


def test_plait_segment_writes_a_class_map_at_the_pictures_size(folders, capsys, tmp_path):
    capsys.readouterr()
    out, over = tmp_path / "mask.png", tmp_path / "over.jpg"
    assert main(["segment", "--model", str(folders / "segment"), str(folders / "scene.png"),
                 "--out", str(out), "--overlay", str(over)]) == 0
    shapes = json.loads(capsys.readouterr().out)
    mask = Image.open(out)
    assert mask.mode == "P" and mask.size == (48, 48) and np.asarray(mask).max() <= 24
    assert Image.open(over).size == (48, 48)
    assert all(s["label"] in data.LABELS for s in shapes)


@pytest.mark.parametrize("args, needle", [
    (["detect", "--model", "{root}/detect", "hello"], "image not found"),
    (["detect", "--model", "{root}/segment", "{root}/scene.png"], "not a detector"),
    (["detect", "--model", "{root}/detect", "--threshold", "2", "{root}/scene.png"],
     "--threshold"),
    (["segment", "--model", "{root}/detect", "{root}/scene.png", "--out", "{root}/m.png"],
     "not a segmenter"),
    (["segment", "--model", "{root}/segment", "{root}/scene.png", "--out", "{root}/m.txt"],
     "ending in .png"),
    (["segment", "--model", "{root}/segment", "{root}/scene.png", "--out",
      "{root}/missing/m.png"], "no directory"),
    (["segment", "--model", "{root}/segment", "{root}/scene.png", "--out", "{root}"],
     "cannot write"),
])
def test_mistakes_are_one_line_and_exit_code_2(folders, capsys, args, needle):
    capsys.readouterr()
    code = main([a.format(root=folders) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err
