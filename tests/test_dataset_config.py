"""Dataset yaml reader: split sources, Colab path fallback, class mapping by name."""

from pathlib import Path

import pytest
import yaml

from smartcash.data.dataset_config import load_dataset_config
from smartcash.data.errors import DatasetError
from smartcash.taxonomy import load_taxonomy

VND_SUBSET = Path(__file__).parent / "data" / "vnd_subset"


def _touch_images(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in names]
    for path in paths:
        path.write_bytes(b"")
    return paths


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_directories_relative_to_yaml_and_path_root(tmp_path):
    _touch_images(tmp_path / "ds" / "train" / "images", ["b.jpg", "a.png", "notes.txt"])
    _touch_images(tmp_path / "ds" / "valid" / "images", ["c.jpg"])
    config = load_dataset_config(_write_yaml(tmp_path / "ds" / "data.yaml", {
        "train": "train/images", "val": "valid/images", "names": ["001", "002"]}))
    assert [p.name for p in config.images("train")] == ["a.png", "b.jpg"]
    assert [p.name for p in config.images("val")] == ["c.jpg"]
    rooted = load_dataset_config(_write_yaml(tmp_path / "rooted.yaml", {
        "path": "ds", "train": "train/images", "names": ["001"]}))
    assert rooted.root == (tmp_path / "ds").resolve()
    assert len(rooted.images("train")) == 2


def test_list_file_and_list_of_entries(tmp_path):
    images = _touch_images(tmp_path / "images" / "x", ["1.jpg", "2.jpg", "3.jpg"])
    (tmp_path / "train.txt").write_text(f"./images/x/1.jpg\n{images[1]}\n\n", encoding="utf-8")
    config = load_dataset_config(_write_yaml(tmp_path / "data.yaml", {
        "train": "train.txt", "val": ["images/x/3.jpg", "train.txt"], "names": ["a"]}))
    assert [p.name for p in config.images("train")] == ["1.jpg", "2.jpg"]
    assert [p.name for p in config.images("val")] == ["1.jpg", "2.jpg", "3.jpg"]
    assert config.label_path(images[0]) == tmp_path / "labels" / "x" / "1.txt"


def test_names_dict_and_nc_mismatch(tmp_path):
    _touch_images(tmp_path / "images", ["a.jpg"])
    config = load_dataset_config(_write_yaml(tmp_path / "d.yaml", {
        "train": "images", "names": {1: "l2_001", 0: "010"}}))
    assert config.source_names == ("010", "l2_001")
    with pytest.raises(DatasetError, match="nc: 3 but names lists 2"):
        load_dataset_config(_write_yaml(tmp_path / "e.yaml", {"train": "images", "nc": 3,
                                                              "names": ["a", "b"]}))


def test_colab_absolute_paths_fall_back_next_to_yaml():
    config = load_dataset_config(VND_SUBSET / "data.yaml")
    assert config.root == VND_SUBSET.resolve()
    assert len(config.images("train")) == 8 and len(config.images("val")) == 4
    assert all(p.is_file() for p in config.images("train"))
    label = config.label_path(config.images("train")[0])
    assert label.parent == (VND_SUBSET / "train" / "labels").resolve() and label.is_file()
    # test: exists in the yaml but not on disk: fine at load, a clear message when requested.
    assert not config.has_split("test")
    with pytest.raises(DatasetError, match="test split not found.*Dataset_2/test/images"):
        config.images("test")


def test_foreign_names_train_with_identity_taxonomy():
    config = load_dataset_config(VND_SUBSET / "data.yaml")
    assert not config.taxonomy.is_smartcash
    assert config.taxonomy.names == config.source_names == (
        "10 000 VND", "100 000 VND", "20 000 VND", "200 000 VND", "50 000 VND", "500 000 VND")
    assert config.class_index == tuple(range(6))


def test_roboflow_names_map_by_name_not_position(tmp_path):
    _touch_images(tmp_path / "images", ["a.jpg"])
    taxonomy = load_taxonomy()
    names = ["l3_text", "100", "l2_005", "l3_sign", "001", "l3_thread"]  # not taxonomy order
    config = load_dataset_config(_write_yaml(tmp_path / "d.yaml", {"train": "images", "names": names}))
    assert config.taxonomy.is_smartcash
    expected = [taxonomy.names.index(n) for n in ("watermark", "100000_whole", "5000_nominal_feature",
                                                  "special_sign", "1000_whole", "security_thread")]
    assert list(config.class_index) == expected


def test_class_map_and_unmapped_names_error(tmp_path):
    _touch_images(tmp_path / "images", ["a.jpg"])
    with pytest.raises(DatasetError) as caught:
        load_dataset_config(_write_yaml(tmp_path / "bad.yaml", {
            "train": "images", "names": ["001", "hologram", "l3_sign", "micro print"]}))
    message = str(caught.value)
    assert "['hologram', 'micro print']" in message and "class_map:" in message
    assert str((tmp_path / "bad.yaml").resolve()) in message
    config = load_dataset_config(_write_yaml(tmp_path / "good.yaml", {
        "train": "images", "names": ["001", "hologram", "l3_sign", "micro print"],
        "class_map": {"hologram": "security_thread", "micro print": "l3_text"}}))
    assert config.class_index == (0, 14, 16, 15)
    with pytest.raises(DatasetError, match="class_map keys"):
        load_dataset_config(_write_yaml(tmp_path / "typo.yaml", {
            "train": "images", "names": ["001"], "class_map": {"002x": "001"}}))


def test_missing_yaml_and_missing_names(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset_config(tmp_path / "nope.yaml")
    with pytest.raises(DatasetError, match="names"):
        load_dataset_config(_write_yaml(tmp_path / "d.yaml", {"train": "images"}))



def test_a_class_id_given_twice_is_an_error_naming_the_line(tmp_path):
    """YAML alone keeps the last of two equal keys: class 0 would silently be renamed."""
    _touch_images(tmp_path / "images", ["a.jpg"])
    path = tmp_path / "d.yaml"
    path.write_text("train: images\nnames:\n  0: one\n  1: two\n  0: three\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"d\.yaml:5: invalid yaml \(key 0 given twice"):
        load_dataset_config(path)

def test_missing_path_root_warns_and_falls_back_to_yaml_folder(tmp_path, caplog):
    _touch_images(tmp_path / "images", ["a.jpg"])
    yaml_file = _write_yaml(tmp_path / "d.yaml", {"path": "neww", "train": "images", "names": ["a"]})
    with caplog.at_level("WARNING", logger="smartcash.data.dataset_config"):
        config = load_dataset_config(yaml_file)
    assert config.root == tmp_path.resolve() and len(config.images("train")) == 1
    (record,) = [r for r in caplog.records if r.levelname == "WARNING"]
    message = record.getMessage()
    assert str(yaml_file.resolve()) in message and "path: neww" in message
    assert message.endswith(f"using {tmp_path.resolve()} (the yaml's folder) instead")
    # When the splits are not found either, the error says that `path:` did not exist.
    typo = load_dataset_config(_write_yaml(tmp_path / "e.yaml", {"path": "neww", "train": "train/images",
                                                                 "names": ["a"]}))
    with pytest.raises(DatasetError, match=r"split not found: train/images .*`path: neww` does not exist"):
        typo.images("train")


def test_existing_path_root_gives_no_warning(tmp_path, caplog):
    _touch_images(tmp_path / "ds" / "images", ["a.jpg"])
    with caplog.at_level("WARNING", logger="smartcash.data.dataset_config"):
        config = load_dataset_config(_write_yaml(tmp_path / "d.yaml", {"path": "ds", "train": "images",
                                                                       "names": ["a"]}))
        typo = load_dataset_config(_write_yaml(tmp_path / "e.yaml", {"path": "ds", "train": "nope",
                                                                     "names": ["a"]}))
    assert config.root == (tmp_path / "ds").resolve() and not caplog.records
    with pytest.raises(DatasetError) as caught:
        typo.images("train")
    assert "`path:" not in str(caught.value)


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("names", ["[001, 002, 005, 010]", "\n  - 001\n  - 002\n  - 005\n  - 010",
                                   "{0: 001, 1: 002, 2: 005, 3: 010}", "{3: 010, 0: 001, 2: 005, 1: 002}"])
def test_unquoted_numeric_names_keep_the_text_written(tmp_path, names):
    # YAML reads unquoted 001 as the int 1 and 010 as the octal int 8: the names are the text written.
    _touch_images(tmp_path / "images", ["a.jpg"])
    config = load_dataset_config(_write_text(tmp_path / "d.yaml", f"train: images\nnames: {names}\n"))
    assert config.source_names == ("001", "002", "005", "010")
    assert config.taxonomy.is_smartcash
    taxonomy = load_taxonomy()
    assert list(config.class_index) == [taxonomy.names.index(n) for n in (
        "1000_whole", "2000_whole", "5000_whole", "10000_whole")]


def test_unquoted_numeric_class_map_keeps_the_text_written(tmp_path):
    _touch_images(tmp_path / "images", ["a.jpg"])
    config = load_dataset_config(_write_text(tmp_path / "d.yaml", (
        "train: images\nnames: [010, ten, 'l3_sign']\nclass_map: {010: 001, ten: 010}\n")))
    assert config.source_names == ("010", "ten", "l3_sign")
    taxonomy = load_taxonomy()
    assert list(config.class_index) == [taxonomy.names.index(n) for n in (
        "1000_whole", "10000_whole", "special_sign")]


def test_predict_output_inside_a_split_is_left_out_with_one_warning_per_folder(tmp_path, caplog):
    """`predict --save-dir images/val/pred` writes drawn copies into the split: they are no dataset images."""
    originals = _touch_images(tmp_path / "images" / "val", ["a.jpg", "b.jpg"])
    drawn = tmp_path / "images" / "val" / "pred"
    _touch_images(drawn, ["a.jpg", "b.jpg"])
    _touch_images(drawn / "nested", ["c.jpg"])  # drawn copies keep the source's subfolders
    (drawn / "predictions.json").write_text("{}\n")
    _touch_images(tmp_path / "images" / "val" / "more", ["d.jpg"])
    (tmp_path / "images" / "val" / "more" / "predictions.csv").write_text("")  # only the json marks an output
    config = load_dataset_config(_write_yaml(tmp_path / "data.yaml", {"train": "images/val", "val": "images/val",
                                                                       "names": ["001"]}))
    caplog.set_level("WARNING", logger="smartcash.data.image_files")
    assert config.images("val") == [*originals, tmp_path / "images" / "val" / "more" / "d.jpg"]
    (warning,) = [record.getMessage() for record in caplog.records]
    assert warning.startswith(f"{drawn}: left out of the dataset, a smartcash.predict output")


def test_folder_named_like_the_results_file_marks_nothing(tmp_path):
    images = _touch_images(tmp_path / "images" / "predictions.json", ["a.jpg"])  # a folder, not predict's file
    config = load_dataset_config(_write_yaml(tmp_path / "data.yaml", {"train": "images", "names": ["001"]}))
    assert config.images("train") == images


def test_unreadable_yamls_are_clear_errors(tmp_path):
    """A folder, Latin-1 text, a list file in UTF-16, nc that is no number: tracebacks before."""
    _touch_images(tmp_path / "images", ["a.jpg"])
    with pytest.raises(DatasetError, match="is a folder; --data takes the dataset's yaml file"):
        load_dataset_config(tmp_path)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("train: images\nnames: [caf\u00e9]\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin\.yaml: not UTF-8 text \(byte 25 is 0xe9\)"):
        load_dataset_config(latin)
    (tmp_path / "list.txt").write_text("images/a.jpg\n", encoding="utf-16")
    config = load_dataset_config(_write_yaml(tmp_path / "l.yaml", {"train": "list.txt", "names": ["a"]}))
    with pytest.raises(DatasetError, match=r"list\.txt: not UTF-8 text"):
        config.images("train")
    for value in ("one", 1e400, True):
        with pytest.raises(DatasetError, match="must be the number of classes"):
            load_dataset_config(_write_yaml(tmp_path / "nc.yaml", {"train": "images", "nc": value, "names": ["a"]}))


def test_merge_keys_still_load_and_unhashable_keys_are_a_clear_error(tmp_path):
    """The repeated-key check must not refuse YAML merges (`<<: *anchor`, keys beside it override)."""
    _touch_images(tmp_path / "images", ["a.jpg"])
    merged = tmp_path / "merge.yaml"
    merged.write_text("common: &c {train: images, nc: 2}\n<<: *c\nnc: 1\nval: images\nnames: [a]\n")
    config = load_dataset_config(merged)
    assert config.source_names == ("a",) and [p.name for p in config.images("train")] == ["a.jpg"]
    odd = tmp_path / "odd.yaml"
    odd.write_text("train: images\nnames: [a]\n? [x, y]\n: 1\n")
    with pytest.raises(DatasetError, match=r"(?s)odd.yaml:3: invalid yaml .*unhashable key"):
        load_dataset_config(odd)


def test_layout_quirks_of_real_exports(tmp_path, caplog):
    """Images in a linked subfolder are read (rglob skipped them); a list file with a BOM keeps its
    first image; a `../train/images` that leaves the export while the export has its own warns."""
    store = tmp_path / "store"
    _touch_images(store, ["s1.jpg", "s2.jpg"])
    export = tmp_path / "proj" / "v2"
    _touch_images(export / "train" / "images", ["a.jpg"])
    (export / "train" / "images" / "extra").symlink_to(store)
    (export / "train" / "images" / "loop").symlink_to(export / "train" / "images")  # a link loop ends
    _touch_images(tmp_path / "proj" / "train" / "images", ["sibling.jpg"])  # another export in the parent
    (export / "list.txt").write_bytes("\ufefftrain/images/a.jpg\r\n".encode("utf-8"))
    caplog.set_level("WARNING", logger="smartcash")
    config = load_dataset_config(_write_yaml(export / "data.yaml", {
        "train": "train/images", "val": "list.txt", "test": "../train/images", "names": ["a"]}))
    assert sorted(p.name for p in config.images("train")) == ["a.jpg", "s1.jpg", "s2.jpg"]
    assert [p.name for p in config.images("val")] == ["a.jpg"]
    assert [p.name for p in config.images("test")] == ["sibling.jpg"]  # as YOLOv5 resolves it ...
    assert "../train/images resolves to" in caplog.text and "outside the yaml's folder" in caplog.text  # ... said


def test_names_that_differ_only_in_case_repeat_and_aliases_that_merge_warn(tmp_path, caplog):
    _touch_images(tmp_path / "images", ["a.jpg"])
    with pytest.raises(DatasetError, match="names: 'Car' / 'car' is ids 0 and 1"):
        load_dataset_config(_write_yaml(tmp_path / "case.yaml", {"train": "images", "names": ["Car", "car"]}))
    caplog.set_level("WARNING", logger="smartcash")
    config = load_dataset_config(_write_yaml(tmp_path / "alias.yaml", {"train": "images", "names": ["100", "100000"]}))
    assert config.class_index[0] == config.class_index[1]
    assert "classes ['100', '100000'] are all names of 100000_whole: they train as one class" in caplog.text
