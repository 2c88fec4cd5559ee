"""loss.json -> Taxonomy / LossConfig: the values the spec fixes, name mapping, validation."""

import json

import pytest

from smartcash.taxonomy import Taxonomy, TaxonomyError, load_loss_config, load_taxonomy


def test_taxonomy_matches_the_spec_table():
    taxonomy = load_taxonomy()
    assert taxonomy.num_classes == 17 and taxonomy.num_main_classes == 8
    denominations = ["1000", "2000", "5000", "10000", "20000", "50000", "100000"]
    assert taxonomy.names[:7] == tuple(f"{d}_whole" for d in denominations)
    assert taxonomy.names[7:14] == tuple(f"{d}_nominal_feature" for d in denominations)
    assert taxonomy.names[14:] == ("security_thread", "watermark", "special_sign")
    assert taxonomy.layers == (1,) * 7 + (2,) * 7 + (3,) * 3
    assert taxonomy.fine_to_main == tuple(range(7)) + tuple(range(7)) + (7, 7, 7)
    assert taxonomy.main_names[7] == "authentication_feature"
    assert taxonomy.ids_in_layer(3) == (14, 15, 16)


def test_loss_weights_match_the_spec():
    config = load_loss_config()
    assert (config.box_weight, config.obj_weight, config.cls_weight) == (0.05, 1.0, 0.5)
    assert config.obj_balance == (4.0, 1.0, 0.4)
    assert config.anchor_threshold == 4.0


def test_roboflow_names_map_by_name_not_position():
    taxonomy = load_taxonomy()
    # Roboflow's export order is l3_thread, l3_sign, l3_text; by position l3_sign would land on
    # id 15 (watermark). By name it is the special sign (16), and l3_text the watermark (15).
    roboflow = ["001", "002", "005", "010", "020", "050", "100",
                "l2_001", "l2_002", "l2_005", "l2_010", "l2_020", "l2_050", "l2_100",
                "l3_thread", "l3_sign", "l3_text"]
    ids = [taxonomy.lookup(name) for name in roboflow]
    assert ids == list(range(14)) + [14, 16, 15]


def test_lookup_is_case_and_space_insensitive_and_rejects_unknown():
    taxonomy = load_taxonomy()
    assert taxonomy.lookup("  Security_Thread ") == 14
    assert taxonomy.lookup("L2_050") == 12
    assert taxonomy.lookup("10 000 VND") is None


def test_round_trip_through_plain_dict():
    taxonomy = load_taxonomy()
    restored = Taxonomy.from_dict(json.loads(json.dumps(taxonomy.to_dict())))
    assert restored == taxonomy


def test_identity_taxonomy_for_foreign_names():
    taxonomy = Taxonomy.identity(["10 000 VND", "20 000 VND"])
    assert taxonomy.names == ("10 000 VND", "20 000 VND")
    assert taxonomy.fine_to_main == (0, 1) and not taxonomy.is_smartcash


def _write(tmp_path, mutate):
    document = json.loads(json.dumps(_original()))
    mutate(document)
    path = tmp_path / "loss.json"
    path.write_text(json.dumps(document))
    return path


def _original():
    from smartcash.taxonomy import DEFAULT_LOSS_JSON

    return json.loads(DEFAULT_LOSS_JSON.read_text())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["taxonomy"]["fine_classes"][3].update(id=4), "must equal its position"),
        (lambda d: d["taxonomy"]["fine_classes"][3].update(main_id=9), "main_id 9"),
        (lambda d: d["taxonomy"]["fine_classes"][3].update(layer=5), "layer 5"),
        (lambda d: d["taxonomy"]["fine_classes"][4]["aliases"].append("001"), "'001' used by both"),
        (lambda d: d["loss"]["obj"].update(balance=[1.0, 2.0]), "3 positive numbers"),
        (lambda d: d["loss"].pop("box"), "loss section malformed"),
    ],
)
def test_malformed_loss_json_is_a_clear_error(tmp_path, mutate, message):
    path = _write(tmp_path, mutate)
    with pytest.raises(TaxonomyError, match=message):
        load_taxonomy(path)
        load_loss_config(path)


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "loss.json"
    path.write_text('{\n  "taxonomy": ,\n}')
    with pytest.raises(TaxonomyError, match=r"loss.json:2: invalid JSON"):
        load_taxonomy(path)


def test_layer_roles_come_from_loss_json_and_survive_old_checkpoints():
    taxonomy = load_taxonomy()
    assert taxonomy.denomination_layers == (1, 2) and taxonomy.authentication_layer == 3  # SPEC table
    old = taxonomy.to_dict()
    del old["denomination_layers"], old["authentication_layer"]  # a checkpoint from before the roles
    assert Taxonomy.from_dict(old) == taxonomy
    foreign = Taxonomy.identity(["cat", "dog"])
    assert Taxonomy.from_dict(foreign.to_dict()) == foreign
    assert foreign.denomination_layers == (1,) and foreign.authentication_layer is None
