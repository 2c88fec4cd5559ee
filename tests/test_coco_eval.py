"""evaluate_coco against pycocotools' COCOeval and faster-coco-eval on random COCO cases built to hit
every rule that changes a number: crowds overlapping normal boxes (several detections inside one
crowd), ``area`` fields on the area-range borders 32**2 and 96**2 and unlike the box's w * h,
zero-width boxes, > 100 detections per image and category, equal scores, exact IoU ties (integer
boxes), images without ground truth or detections, categories without ground truth or detections,
``ignore`` fields (overwritten by iscrowd in pycocotools), subsets of images and categories,
maxDets, useCats = 0. All 12 stats and the precision / recall / scores arrays, to 1e-12."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from benchmarks.bench_map import cocoeval_faster, cocoeval_pycocotools
from smartcash.model.training.core.coco_evaluation import COCO_AREA_RANGES, evaluate_coco

TOLERANCE = 1e-12


def coco_case(seed: int) -> tuple[dict, list[dict]]:
    """A small adversarial COCO dataset and results list."""
    rng = np.random.default_rng(seed)
    image_ids = (rng.choice(10_000, int(rng.integers(1, 30)), replace=False) + 1).tolist()
    category_ids = (rng.choice(100, int(rng.integers(1, 8)), replace=False) + 1).tolist()
    with_truth = rng.choice(category_ids, max(1, len(category_ids) - int(rng.integers(0, 2))), replace=False)
    integer = rng.random() < 0.5
    round_scores = rng.random() < 0.6
    annotations, results = [], []

    def box_near(x: float, y: float, side: float) -> list[float]:
        width = side * rng.uniform(0.5, 2) if rng.random() < 0.7 else side
        height = side * side / width if rng.random() < 0.3 else side
        box = [x, y, width, height]
        if rng.random() < 0.03:
            box[2 + int(rng.integers(2))] = 0.0  # zero width or height: IoU 0 with everything
        return [float(np.round(v)) if integer else float(v) for v in box]

    for image_id in image_ids:
        own = []
        for _ in range(int(rng.choice([0, rng.integers(1, 5), rng.integers(1, 14)]))):
            side = float(rng.choice([rng.uniform(2, 140), 32.0, 96.0, rng.uniform(25, 40), rng.uniform(90, 100)]))
            box = box_near(*rng.uniform(0, 120, 2), side)
            crowd = rng.random() < 0.12
            if crowd:  # a crowd region over several objects
                box = [box[0] - 10, box[1] - 10, box[2] + 40, box[3] + 40]
            exact = box[2] * box[3]
            area = float(rng.choice([exact, exact * rng.uniform(0.3, 1.0), 32.0**2, 96.0**2, np.nextafter(32.0**2, 0)]))
            annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(rng.choice(with_truth)),
                          "bbox": box, "area": area, "iscrowd": int(crowd)}
            if rng.random() < 0.1:
                annotation["ignore"] = int(rng.integers(2))  # pycocotools overwrites it with iscrowd
            annotations.append(annotation)
            own.append(annotation)
        crowded = rng.random() < 0.08
        count = 130 if crowded else int(rng.choice([0, rng.integers(1, 10), rng.integers(1, 40)]))
        fixed_category = int(rng.choice(category_ids))
        for _ in range(count):
            if own and rng.random() < 0.7:
                source = own[int(rng.integers(len(own)))]
                shift = rng.normal(0, 2, 4) * (rng.random() < 0.7)
                box = [float(v) for v in np.array(source["bbox"]) + shift]
                box[2], box[3] = abs(box[2]), abs(box[3])
                if integer:
                    box = [float(np.round(v)) for v in box]
                category = source["category_id"] if rng.random() < 0.8 else int(rng.choice(category_ids))
            else:
                box = box_near(*rng.uniform(0, 120, 2), float(rng.uniform(1, 100)))
                category = int(rng.choice(category_ids))
            score = float(rng.random())
            results.append({"image_id": image_id, "category_id": fixed_category if crowded else category,
                            "bbox": box, "score": round(score, 1 if rng.random() < 0.5 else 2) if round_scores else score})
    images = [{"id": i, "width": 200, "height": 200} for i in rng.permutation(image_ids).tolist()]
    categories = [{"id": c, "name": f"c{c}"} for c in category_ids]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def assert_same(result, reference, what: str = "") -> None:
    """All 12 stats and COCOeval's precision, recall and scores arrays."""
    stats = np.asarray(reference.stats)[:12]
    assert np.abs(result.stats - stats).max() <= TOLERANCE, f"{what} stats\n{result.stats}\n{stats}"
    for key in ("precision", "recall", "scores"):
        expected, actual = reference.eval[key], getattr(result, key)
        assert actual.shape == expected.shape, f"{what} {key} shape {actual.shape} != {expected.shape}"
        assert np.array_equal(actual == -1, expected == -1), f"{what} {key}: -1 pattern differs"
        assert np.abs(actual - expected).max(initial=0) <= TOLERANCE, f"{what} {key} differs"


CASES = list(range(36))


@pytest.mark.parametrize("seed", CASES)
def test_equals_pycocotools(seed: int) -> None:
    dataset, results = coco_case(seed)
    if not results:
        pytest.skip("pycocotools' loadRes cannot take an empty result list")
    assert_same(evaluate_coco(dataset, results), cocoeval_pycocotools(dataset, results), f"seed {seed}")


@pytest.mark.parametrize("seed", CASES[:12])
def test_equals_faster_coco_eval(seed: int) -> None:
    dataset, results = coco_case(seed)
    if not results:
        pytest.skip("no detections")
    reference = cocoeval_faster(dataset, results)
    result = evaluate_coco(dataset, results)
    assert np.abs(result.stats - np.asarray(reference.stats)[:12]).max() <= TOLERANCE
    for key in ("precision", "recall"):
        assert np.abs(getattr(result, key) - reference.eval[key]).max() <= TOLERANCE


@pytest.mark.parametrize("seed", [3, 7, 11])
def test_json_files_and_arrays_give_the_same_as_dicts(seed: int, tmp_path) -> None:
    dataset, results = coco_case(seed)
    truth, found = tmp_path / "truth.json", tmp_path / "found.json"
    truth.write_text(json.dumps(dataset, indent=int(seed % 2) or None))
    found.write_text(json.dumps(results))
    from_dicts = evaluate_coco(dataset, results)
    from_files = evaluate_coco(truth, str(found))
    rows = np.array([[r["image_id"], *r["bbox"], r["score"], r["category_id"]] for r in results]).reshape(-1, 7)
    from_array = evaluate_coco(dataset, rows)
    for other in (from_files, from_array):
        assert np.array_equal(other.stats, from_dicts.stats)
        assert np.array_equal(other.precision, from_dicts.precision)
    assert_same(from_files, cocoeval_pycocotools(str(truth), str(found)), "files")


@pytest.mark.parametrize(("seed", "params"), [
    (1, {"useCats": 0}),
    (4, {"useCats": 0}),
    (2, {"maxDets": [1, 5, 20]}),
    (5, {"maxDets": [3, 10, 100, 300]}),
    (6, {"areaRng": [[0, 1e10], [0, 20**2], [20**2, 60**2], [60**2, 1e10]]}),
])
def test_parameters_equal_pycocotools(seed: int, params: dict) -> None:
    dataset, results = coco_case(seed)
    reference = cocoeval_pycocotools(dataset, results, params)
    kwargs = {"use_categories": bool(params.get("useCats", 1))}
    if "maxDets" in params:
        kwargs["max_detections"] = tuple(params["maxDets"])
    if "areaRng" in params:
        kwargs["area_ranges"] = dict(zip(COCO_AREA_RANGES, params["areaRng"]))
    result = evaluate_coco(dataset, results, **kwargs)
    assert_same(result, reference, str(params))


def test_image_and_category_subsets_equal_pycocotools() -> None:
    dataset, results = coco_case(9)
    images = sorted(image["id"] for image in dataset["images"])[::2]
    categories = sorted(category["id"] for category in dataset["categories"])[:2]
    reference = cocoeval_pycocotools(dataset, results, {"imgIds": images, "catIds": categories})
    result = evaluate_coco(dataset, results, image_ids=images, category_ids=categories)
    assert_same(result, reference, "subsets")
    assert result.category_ids.tolist() == categories and result.image_ids.tolist() == images


def test_annotation_id_zero_is_unmatched_as_in_pycocotools(caplog) -> None:
    # pycocotools stores the matched annotation's id in dtm and reads 0 as "no match".
    dataset, results = coco_case(12)
    dataset = copy.deepcopy(dataset)
    dataset["annotations"][0]["id"] = 0
    with caplog.at_level("WARNING"):
        result = evaluate_coco(dataset, results)
    assert "id 0" in caplog.text
    assert_same(result, cocoeval_pycocotools(dataset, results), "id 0")


def test_hand_computed_crowd_case() -> None:
    # One image, one category. A regular object A (area 100) and a crowd region C. Detections by
    # score: d1 on A (IoU 1), d2 and d3 inside C (IoU over the detection's own area: 1), d4 far away.
    # d2 and d3 match the crowd and are ignored; d4 is a false positive. In score order the
    # counted detections are TP, FP: precision 1 at recall 1 (npig = 1), so AP = 1 at every IoU
    # (1 / (1 + eps) exactly: COCOeval adds np.spacing(1) to the denominator).
    dataset = {
        "images": [{"id": 1}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 100, 100], "area": 10000, "iscrowd": 1},
        ],
    }
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [60, 60, 10, 10], "score": 0.8},
        {"image_id": 1, "category_id": 1, "bbox": [80, 80, 20, 20], "score": 0.7},
        {"image_id": 1, "category_id": 1, "bbox": [300, 300, 5, 5], "score": 0.6},
    ]
    result = evaluate_coco(dataset, results)
    assert result.stats[0] == pytest.approx(1.0, abs=1e-15) and result.stats[8] == 1.0  # AP, AR100
    assert result.stats[3] == pytest.approx(1.0, abs=1e-15) and result.stats[4] == -1.0  # A is small; no medium object
    assert result.num_truths[0].tolist() == [1, 1, 0, 0]  # the crowd never counts
    assert_same(result, cocoeval_pycocotools(dataset, results), "crowd")


def test_empty_detections_and_categories_without_truth() -> None:
    dataset, _ = coco_case(13)
    result = evaluate_coco(dataset, [])
    has_truth = result.num_truths[:, 0] > 0
    assert (result.precision[:, :, has_truth, 0] == 0).all() and (result.precision[:, :, ~has_truth] == -1).all()
    assert result.stats[0] == 0.0


def test_cli_prints_pycocotools_summary_line_for_line(tmp_path, capsys) -> None:
    from smartcash.coco_eval import main

    dataset, results = coco_case(21)
    truth, found, output = tmp_path / "truth.json", tmp_path / "found.json", tmp_path / "out" / "stats.json"
    truth.write_text(json.dumps(dataset))
    found.write_text(json.dumps(results))
    reference = cocoeval_pycocotools(dataset, results)
    import contextlib
    import io

    expected = io.StringIO()
    with contextlib.redirect_stdout(expected):
        reference.summarize()
    assert main([str(truth), str(found), "--json", str(output), "--per-class"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[:12] == expected.getvalue().splitlines()
    assert len(printed) == 12 + 1 + 1 + len(dataset["categories"])  # blank line, table header, rows
    written = json.loads(output.read_text())
    assert written["summary"] == printed[:12]
    assert written["stats"]["AP"] == pytest.approx(reference.stats[0], abs=TOLERANCE)
    assert [row["id"] for row in written["per_category"]] == sorted(c["id"] for c in dataset["categories"])


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys) -> None:
    from smartcash.coco_eval import main

    dataset, results = coco_case(2)
    results[1]["image_id"] = 10**6
    truth, found = tmp_path / "truth.json", tmp_path / "found.json"
    truth.write_text(json.dumps(dataset))
    found.write_text(json.dumps(results))
    assert main([str(truth), str(found)]) == 2
    assert "found.json[1]: image_id 1000000 is not an image of the ground truth" in capsys.readouterr().err


def test_per_category_stats_match_pycocotools_restricted_to_one_category() -> None:
    dataset, results = coco_case(14)
    result = evaluate_coco(dataset, results)
    for k, category in enumerate(result.category_ids[:3]):
        reference = cocoeval_pycocotools(dataset, results, {"catIds": [int(category)]})
        assert np.abs(result.category_stats[k] - np.asarray(reference.stats)).max() <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1000, 1400))
def test_parity_sweep(seed: int) -> None:
    dataset, results = coco_case(seed)
    if not results:
        pytest.skip("no detections")
    result = evaluate_coco(dataset, results)
    assert_same(result, cocoeval_pycocotools(dataset, results), f"seed {seed}")
    if seed % 4 == 0:
        reference = cocoeval_faster(dataset, results)
        assert np.abs(result.stats - np.asarray(reference.stats)[:12]).max() <= TOLERANCE
    if seed % 10 == 0:
        assert_same(evaluate_coco(dataset, results, use_categories=False),
                    cocoeval_pycocotools(dataset, results, {"useCats": 0}), f"useCats=0 seed {seed}")


def test_cli_json_never_replaces_an_input(tmp_path, capsys) -> None:
    """--json gt.json wrote the stats over the ground truth (exit 0)."""
    from smartcash.coco_eval import main

    dataset, results = coco_case(3)
    truth, found = tmp_path / "truth.json", tmp_path / "found.json"
    truth.write_text(json.dumps(dataset))
    found.write_text(json.dumps(results))
    before = truth.read_bytes(), found.read_bytes()
    for output, message in ((truth, "is the input"), (found, "is the input"), (tmp_path / "stats.txt", "must end in .json"),
                            (tmp_path, "is a folder")):
        assert main([str(truth), str(found), "--json", str(output)]) == 2
        assert message in capsys.readouterr().err
    assert (truth.read_bytes(), found.read_bytes()) == before
    assert not (tmp_path / "stats.txt").exists()
