"""The benchmark harness's own logic (no timing here): the extractor's loop baseline agrees with the
vectorized extractor, the install benchmark finds the README command, and the dataset tree both
tools read keeps every image and label."""

from pathlib import Path

import pytest
import yaml

from benchmarks import bench_extractor, bench_install, workloads

REPO = Path(__file__).resolve().parents[1]
VND_SUBSET = REPO / "tests" / "data" / "vnd_subset" / "data.yaml"


def test_loop_baseline_gives_the_extractors_answers():
    from smartcash.model.training.core.classification_extractor import ClassificationExtractor
    from smartcash.taxonomy import load_taxonomy

    extractor = ClassificationExtractor(load_taxonomy())
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


def test_epoch_line_pattern_matches_the_trainer_log():
    line = ("05:38:17 INFO smartcash.model.training.trainer: epoch 0/9: mAP50 0.0000 mAP50-95 0.0000 "
            "fitness 0.0000 (best 0.0000 @ 0) 70.0 s\n")
    found = bench_install.EPOCH_DONE.search(line)
    assert found is not None and float(found.group(2)) == 70.0


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
