"""The benchmark harness's own logic (no timing here): the extractor's loop baseline agrees with the
vectorized extractor, the install benchmark finds the README command, the dataset tree both
tools read keeps every image and label, the learning benchmark's clock and curve arithmetic
(with a --quick smoke run: SmartCash alone by default, against ultralytics under `slow`), and the
training benchmark's memory sampler and results (phase 1 and 2 rows with their peak memory)."""

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks import (bench_extractor, bench_install, bench_learning, bench_training, learning_curves, memory,
                        workloads)
from smartcash.model.training.precision import training_precision

REPO = Path(__file__).resolve().parents[1]
VND_SUBSET = REPO / "tests" / "data" / "vnd_subset" / "data.yaml"


@pytest.fixture(autouse=True)
def _library_log_level():
    """The benchmarks' main() quiets the smartcash logger, as a CLI may: not for the tests after it."""
    library = logging.getLogger("smartcash")
    level = library.level
    yield
    library.setLevel(level)


def test_loop_baseline_gives_the_extractors_answers():
    from smartcash.model.training.core.classification_extractor import ClassificationExtractor
    from smartcash.taxonomy import load_taxonomy

    extractor = ClassificationExtractor(load_taxonomy(), presence_threshold=0.25)
    loop = bench_extractor.LoopExtractor(extractor)
    batches = [bench_extractor.make_batch(seed, size, 17, "cpu") for seed, size in enumerate((1, 5, 33))]
    bench_extractor.check_same_answers(extractor, loop, batches)
    loop.threshold += 0.01  # a different rule must be caught
    with pytest.raises(AssertionError):
        bench_extractor.check_same_answers(extractor, loop, batches)


def test_readme_command_splits_into_setup_and_run():
    command = bench_install.readme_command(REPO / "README.md")
    setup, run = bench_install.split_steps(command)
    assert any("pip install" in step for step in setup)
    assert run and run[0].startswith("python -m smartcash.train")


def test_epoch_line_pattern_reads_the_epoch_time_from_a_real_trainer_log(tmp_path, caplog):
    import logging

    from smartcash.data.synthetic import ensure_synthetic_dataset
    from smartcash.model.training.records import read_results
    from smartcash.train import main as train

    data_yaml = ensure_synthetic_dataset(root=tmp_path / "data", num_train=8, num_val=4, imgsz=64)
    (tmp_path / "tiny.yaml").write_text("plots: false\nprecise_bn_images: 4\n")
    with caplog.at_level(logging.INFO, logger="smartcash"):
        assert train(["--data", str(data_yaml), "--imgsz", "64", "--batch", "4", "--workers", "0", "--device", "cpu",
                      "--epochs", "1", "--project", str(tmp_path / "runs"), "--config", str(tmp_path / "tiny.yaml")]) == 0
    found = [m for m in map(bench_install.EPOCH_DONE.search, caplog.messages) if m]
    assert len(found) == 1 and found[0].group(1) == "0"
    (row,) = read_results(tmp_path / "runs" / "train" / "exp" / "phase1" / "results.csv")
    assert float(found[0].group(2)) == pytest.approx(float(row["epoch_time_s"]), abs=0.05)  # not precise BN's time


def test_benchmark_dataset_tree_keeps_images_labels_and_names(tmp_path):
    from smartcash.data.dataset_config import load_dataset_config

    source = load_dataset_config(VND_SUBSET)
    data = workloads.prepare_dataset(str(VND_SUBSET), tmp_path / "data", {"train": 3, "val": None})
    assert data.num_images == {"train": 3, "val": len(source.images("val"))}
    linked = load_dataset_config(data.data_yaml)
    assert linked.source_names == source.source_names
    for split in ("train", "val"):
        originals = {path.resolve() for path in source.images(split)}
        for image in linked.images(split):
            original = image.resolve()
            assert original in originals  # the same split's files, linked
            assert linked.label_path(image).is_file() == source.label_path(original).is_file()
            if linked.label_path(image).is_file():
                assert linked.label_path(image).read_bytes() == source.label_path(original).read_bytes()
    names = yaml.safe_load(data.data_yaml.read_text())["names"]
    assert list(names.values()) == list(source.source_names)  # ultralytics reads the same names


def test_learning_curve_at_a_wall_time_hand_computed():
    curve = [(10.0, 0.2), (20.0, 0.1), (40.0, 0.5)]  # (wall_s, mAP50-95) at each epoch's end
    assert learning_curves.best_by(curve, 5.0) is None  # no epoch finished yet
    assert learning_curves.best_by(curve, 25.0) == 0.2  # the best so far, not the latest
    assert learning_curves.best_by(curve, 40.0) == 0.5
    assert learning_curves.value_at(curve, 5.0) == (pytest.approx(0.1), False)  # from (0, 0) to (10, 0.2)
    assert learning_curves.value_at(curve, 30.0) == (pytest.approx(0.3), False)  # halfway from 0.1 to 0.5
    assert learning_curves.value_at(curve, 50.0) == (0.5, True)  # after its last epoch: held


def test_learning_wall_clock_falls_back_to_epoch_proportions():
    stamped = bench_learning.WatchedRun(wall_s=12.0, row_seconds=(4.0, 9.0), exact=True)
    assert bench_learning.epoch_wall_seconds(stamped, [1.0, 1.0]) == ([4.0, 9.0], "stamped")
    burst = bench_learning.WatchedRun(wall_s=12.0, row_seconds=(9.0, 9.0), exact=False)  # two rows in one write
    seconds, clock = bench_learning.epoch_wall_seconds(burst, [1.0, 3.0])
    assert clock == "proportional" and seconds == pytest.approx([3.0, 12.0])


def test_learning_counts_only_complete_csv_rows(tmp_path):
    path = tmp_path / "results.csv"
    assert bench_learning.count_rows(path) == 0
    path.write_text("epoch,time\n1,0.5\n2,0.")  # caught in the middle of an append
    assert bench_learning.count_rows(path) == 1


def test_ultralytics_child_refuses_the_network_at_once():
    code = ("from benchmarks.ultralytics_train import refuse_network; refuse_network()\n"
            "import urllib.request\n"
            "urllib.request.urlopen('https://github.com', timeout=60)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "network disabled" in done.stderr
    assert time.perf_counter() - start < 20


def _check_learning_results(path, trainers):
    results = json.loads(path.read_text())
    assert results["settings"]["epochs1"] == results["settings"]["epochs2"] == 1
    assert {run["trainer"] for run in results["runs"]} == trainers
    for run in results["runs"]:
        rows = [row for row in results["epochs"] if row["trainer"] == run["trainer"] and row["seed"] == run["seed"]]
        expected = 2 if run["trainer"] == "smartcash" else results["settings"]["ultra_epochs"]
        assert [row["epoch"] for row in rows] == list(range(1, expected + 1))
        walls = [row["wall_s"] for row in rows]
        assert walls == sorted(walls) and 0 < walls[-1] <= run["wall_s"]
        assert all(0.0 <= row[metric] <= 1.0 for row in rows for metric in ("mAP50", "mAP50-95"))
    for run in results["runs"]:
        if run["trainer"] == "smartcash":
            phase1, phase2 = run["phases"]
            assert phase1["wall_s"] + phase2["wall_s"] == pytest.approx(run["wall_s"])
            second = next(row for row in results["epochs"] if row["trainer"] == "smartcash" and row["phase"] == 2)
            assert second["wall_s"] > phase1["wall_s"]  # phase 2's clock starts where phase 1's process ended
    return results


def test_learning_quick_smartcash_side(tmp_path):
    out = tmp_path / "learning.json"
    assert bench_learning.main(["--quick", "--skip-ultralytics", "--threads", "1", "--seeds", "0",
                                "--loss-gains", "cls=0.5", "--out", str(out)]) == 0
    results = _check_learning_results(out, {"smartcash"})
    assert results["summary"]["equal_wall_time"] == []
    assert results["settings"]["loss_gains"] == "cls=0.5"  # both phases ran with it
    assert all(phase["command"].endswith("--loss-gains cls=0.5") for phase in results["runs"][0]["phases"])
    assert all(phase["loss_used"]["gains"]["cls"] == 0.5 for phase in results["runs"][0]["phases"])
    with pytest.raises(SystemExit):
        bench_learning.main(["--quick", "--loss-gains", "iou=2"])
    used = results["runs"][0]["phases"][0]["recipe_used"]
    assert used is None or used["name"] == "scratch"  # auto without --weights: nothing pretrained to keep


@pytest.mark.slow
def test_learning_quick_against_ultralytics(tmp_path):
    out = tmp_path / "learning.json"
    assert bench_learning.main(["--quick", "--threads", "1", "--seeds", "0", "--out", str(out)]) == 0
    results = _check_learning_results(out, {"smartcash", "ultralytics"})
    ultralytics = next(run for run in results["runs"] if run["trainer"] == "ultralytics")
    assert any("optimizer=auto" in line for line in ultralytics["optimizer_log"])
    assert ultralytics["threads"] == 1
    (equal,) = results["summary"]["equal_wall_time"]
    assert equal["ultralytics_wall_s"] == pytest.approx(ultralytics["wall_s"])


def test_summary_table_lists_every_tool_and_run(tmp_path, capsys):
    from benchmarks import summary_table
    from benchmarks.common import write_results

    results = tmp_path / "results"
    write_results("loader_quick", {"devices": [{"device": "cuda", "tools": {
        "smartcash loader": {"images_per_s": 900.0, "ratio_to_smartcash": 1.0},
        "ultralytics loader": {"images_per_s": 600.0, "ratio_to_smartcash": 1.5}}}]}, results)
    write_results("map", {"machine": {"device": "cpu"}, "tools": {"pycocotools": {"median_s": 0.8,
                                                                                   "ratio_to_smartcash": 95.5}}},
                  results)
    write_results("map_dense", {"machine": {"device": "cpu"}, "tools": {"smartcash yolo": {"time_s": 2.5}}}, results)
    run = tmp_path / "runs/train/vnd/phase1"
    run.mkdir(parents=True)
    (run / "results.csv").write_text("epoch,epoch_time_s,metrics/mAP50,metrics/mAP50-95\n0,10,0.1,0.05\n"
                                     "1,20,0.3,0.125\n")
    assert summary_table.main([str(results), "--runs", str(tmp_path / "runs")]) == 0
    table = capsys.readouterr().out
    assert "ultralytics loader" in table and "600.0 img/s" in table and "1.50" in table
    assert "800.0 ms" in table and "95.50" in table
    assert "map_dense" in table and "2500.0 ms" in table  # one timed call (the dense case)
    assert "vnd/phase1, 2 epochs" in table and "15.0 s/epoch" in table and "mAP50-95 0.125" in table


def test_gpu_check_script_is_valid_bash():
    script = Path(__file__).resolve().parents[1] / "benchmarks/gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(script.parent)})
    assert result.returncode != 0 and "SMARTCASH_VND_DATA" in result.stderr  # says what it needs first


ALLOCATE_200_MIB = "import numpy, time; block = numpy.ones(200 * 2**20 // 8); time.sleep(1.5)"  # written: resident


def _sampled(code):
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    with memory.TreeMemorySampler(process.pid, interval=0.1, pss_interval=0.1) as sampler:
        assert process.wait(timeout=120) == 0
    return sampler.summary()


@pytest.mark.skipif(not memory.available(), reason="reads /proc (Linux)")
def test_memory_sampler_sees_a_child_and_its_workers():
    alone = _sampled(ALLOCATE_200_MIB)
    assert alone["peak_rss_main_sampled_mib"] >= 200 and alone["peak_pss_tree_mib"] >= 200
    assert alone["peak_rss_workers_mib"] == 0 and alone["max_processes"] == 1
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {ALLOCATE_200_MIB!r}], check=True)"
    nested = _sampled(parent)
    assert nested["peak_rss_main_sampled_mib"] < 100  # the allocation is in its child, a "worker"
    assert nested["peak_rss_workers_mib"] >= 200 and nested["peak_pss_tree_mib"] >= 200
    assert nested["peak_rss_tree_mib"] >= nested["peak_rss_workers_mib"] and nested["max_processes"] == 2


MEMORY_KEYS = ("peak_rss_main_mib", "peak_rss_workers_mib", "peak_rss_tree_mib", "peak_pss_tree_mib")


def _check_training_results(path, ultralytics):
    results = json.loads(path.read_text())
    (device,) = results["devices"]
    tools = device["tools"]
    float32_rows = [tool for name, tool in tools.items() if name.startswith("smartcash") and "float32" in name]
    smartcash = {tool["phase"]: tool for name, tool in tools.items()
                 if name.startswith("smartcash") and "float32" not in name}  # its default precision
    assert sorted(smartcash) == [1, 2] and smartcash[1]["recipe"] == smartcash[2]["recipe"] == "finetune"
    default_precision = training_precision(True, torch.device("cpu")).name
    assert {tool["precision"] for tool in smartcash.values()} == {default_precision}
    # Where the default is not float32, both phases run again in float32 for comparison.
    assert [tool["precision"] for tool in float32_rows] == ([] if default_precision == "float32" else ["float32"] * 2)
    assert smartcash[1]["workers"] == smartcash[2]["workers"] == bench_training.WORKERS
    assert all(tool["threads"] == 1 for tool in tools.values())  # --threads 1 reached every trainer
    assert set(results["memory"]) >= set(MEMORY_KEYS)
    for name, tool in tools.items():
        assert len(tool["epoch_seconds"]) == 2 and tool["images_per_s"] > 0
        if memory.available():
            assert tool["peak_rss_main_mib"] > 100  # torch alone is more than that, resident
            assert tool["peak_rss_tree_mib"] >= tool["peak_rss_main_mib"] * 0.5
            assert 0 < tool["peak_pss_tree_mib"] <= tool["peak_rss_tree_mib"]
            assert tool["max_processes"] >= 1 + tool["workers"]  # main + the training loader's workers
            assert (tool["peak_rss_workers_mib"] > 0) == (tool["max_processes"] > 1)
    peers = {tool["phase"]: tool for name, tool in tools.items() if name.startswith("ultralytics")}
    assert sorted(peers) == ([1, 2] if ultralytics else [])
    if ultralytics:
        assert peers[1]["freeze"] == bench_training.BACKBONE_LAYERS and peers[2]["freeze"] is None
        ratio = peers[2]["median_epoch_s"] / smartcash[2]["median_epoch_s"]
        assert peers[2]["ratio_to_smartcash"] == pytest.approx(ratio)
    return results


def test_training_quick_smartcash_side_reports_both_phases_and_memory(tmp_path, capsys):
    out = tmp_path / "training.json"
    assert bench_training.main(["--quick", "--skip-ultralytics", "--threads", "1", "--train-images", "8",
                                "--val-images", "4", "--out", str(out)]) == 0
    _check_training_results(out, ultralytics=False)
    table = capsys.readouterr().out
    assert "peak RSS main MiB" in table and "smartcash phase 2 (all layers, recipe finetune)" in table


@pytest.mark.slow
def test_training_quick_against_ultralytics(tmp_path):
    out = tmp_path / "training.json"
    assert bench_training.main(["--quick", "--threads", "1", "--train-images", "8", "--val-images", "4",
                                "--out", str(out)]) == 0
    _check_training_results(out, ultralytics=True)


def test_own_peak_rss_is_the_childs_not_its_parents():
    """ru_maxrss would carry the parent's peak over fork + exec; VmHWM is the child's own."""
    import numpy as np

    ballast = np.ones(300 * 2**20, dtype=np.uint8)  # this process: 300 MiB more, resident
    out = subprocess.run([sys.executable, "-c", "from benchmarks.memory import own_peak_rss_mib; "
                          "print(own_peak_rss_mib())"], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert ballast.sum() > 0 and float(out.stdout) < 100
