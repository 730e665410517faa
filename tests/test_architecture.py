"""Tests for ArchitectureSpec (keras_metapool.models.architecture): presets, JSON, repr, errors."""

import json

import pytest
from helpers import CHOICES, METHOD_ABLATIONS

from keras_metapool.layers import CANDIDATE_OPS, DEFAULT_CANDIDATES
from keras_metapool.models.architecture import (
    ArchitectureSpec,
    resolve_spec,
)


def custom_spec():
    """A spec exercising every entry kind: identity, op, pair, search."""
    ops = ["identity", "ssp", ("ssp", "avg3"), "search", "max5"] * 3 + ["avg7", ["max3", "ssp"]]
    return ArchitectureSpec(ops, post_norm=True, candidates=("ssp", "max3", "avg3"), name="mine")


def all_specs():
    specs = {
        "paper": ArchitectureSpec.paper(),
        "plain": ArchitectureSpec.plain(),
        "search_output": ArchitectureSpec.search(),
        "search_hidden": ArchitectureSpec.search("hidden"),
        "search_subset": ArchitectureSpec.search(candidates=("identity", "ssp", "avg5")),
        "custom": custom_spec(),
        "custom_hidden": ArchitectureSpec(["identity"] + ["avg3", "ssp"] * 8, placement="hidden"),
        "unnamed_no_post_norm": ArchitectureSpec(["ssp"] * 17, post_norm=False),
    }
    for name in METHOD_ABLATIONS:
        specs["ablation_" + name] = ArchitectureSpec.ablation(name)
    return specs


SPECS = all_specs()


# -- presets -----------------------------------------------------------------


def test_paper_preset_is_ssp_after_blocks_6_to_16_without_post_norm():
    spec = ArchitectureSpec.paper()
    assert spec.ops == ("identity",) * 6 + ("ssp",) * 11
    assert spec.points == tuple(range(6, 17))
    assert spec.placement == "output"
    assert spec.post_norm is False
    assert not spec.is_searchable


def test_plain_preset_has_no_points():
    spec = ArchitectureSpec.plain()
    assert spec.points == ()
    assert len(spec) == 17
    assert all(entry == "identity" for entry in spec)


@pytest.mark.parametrize("placement, first", [("output", "search"), ("hidden", "identity")])
def test_search_preset_points_per_placement(placement, first):
    spec = ArchitectureSpec.search(placement)
    assert spec.placement == placement
    assert spec[0] == first
    assert spec.ops[1:] == ("search",) * 16
    assert spec.is_searchable
    assert spec.candidates == DEFAULT_CANDIDATES
    assert len(spec.points) == (17 if placement == "output" else 16)


@pytest.mark.parametrize("name", sorted(METHOD_ABLATIONS))
def test_ablations_follow_method_index_lists(name):
    spec = ArchitectureSpec.ablation(name)
    assert spec.ops == tuple(CHOICES[i] for i in METHOD_ABLATIONS[name])
    assert spec.placement == "output"
    assert spec.post_norm is True
    assert spec == ArchitectureSpec.from_indices(METHOD_ABLATIONS[name], name=name)


def test_from_indices_with_custom_choices():
    spec = ArchitectureSpec.from_indices([1, 0] * 8 + [2], choices=("identity", "max3", "avg5"))
    assert spec.ops == ("max3", "identity") * 8 + ("avg5",)


@pytest.mark.parametrize("indices", [[5] * 17, [-1] + [0] * 16, [0.0] * 17, [True] * 17])
def test_from_indices_rejects_bad_indices(indices):
    with pytest.raises(ValueError, match="index"):
        ArchitectureSpec.from_indices(indices)


def test_unknown_ablation_lists_valid_ones():
    with pytest.raises(ValueError) as info:
        ArchitectureSpec.ablation("semi_local")
    for name in METHOD_ABLATIONS:
        assert name in str(info.value)


def test_entries_are_normalized():
    ops = ["identity"] * 15 + [["avg3"], ["ssp", "max3"]]
    spec = ArchitectureSpec(ops)
    assert spec[15] == "avg3"  # a one-element list is the op itself
    assert spec[16] == ("ssp", "max3")  # a pair becomes a tuple
    assert spec.points == (15, 16)
    # Lists and tuples describe the same spec.
    assert spec == ArchitectureSpec(["identity"] * 15 + ["avg3", ("ssp", "max3")])
    # The order of a pair is kept (it names the layers), so it distinguishes specs.
    assert spec != ArchitectureSpec(["identity"] * 15 + ["avg3", ("max3", "ssp")])


def test_equality_and_hash_see_every_field():
    base = ArchitectureSpec.ablation("random")
    assert base == ArchitectureSpec.ablation("random")
    assert hash(base) == hash(ArchitectureSpec.ablation("random"))
    assert base != ArchitectureSpec(list(base.ops), post_norm=False, name="random")
    assert base != ArchitectureSpec(list(base.ops), name="other")
    assert base != ArchitectureSpec.ablation("global")
    assert base != list(base.ops)
    assert len({base, ArchitectureSpec.ablation("random"), ArchitectureSpec.paper()}) == 2


# -- serialization ---------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(SPECS))
def test_json_and_dict_round_trip(key):
    spec = SPECS[key]
    text = spec.to_json()
    assert json.loads(text)["ops"][0] == (list(spec[0]) if isinstance(spec[0], tuple) else spec[0])
    again = ArchitectureSpec.from_json(text)
    assert again == spec
    assert again.ops == spec.ops  # pairs come back as tuples, not lists
    assert again.candidates == spec.candidates
    assert again.name == spec.name
    assert ArchitectureSpec.from_dict(spec.to_dict()) == spec
    # The dict is plain JSON data.
    assert json.loads(json.dumps(spec.to_dict())) == spec.to_dict()


@pytest.mark.parametrize("key", sorted(SPECS))
def test_repr_is_python_for_the_same_spec(key):
    spec = SPECS[key]
    text = repr(spec)
    assert "\n" not in text
    again = eval(text, {"ArchitectureSpec": ArchitectureSpec})  # noqa: S307
    assert again == spec
    assert again.ops == spec.ops


def test_save_and_load_file(tmp_path):
    spec = custom_spec()
    path = tmp_path / "arch.json"
    spec.save(path)
    assert json.loads(path.read_text(encoding="utf-8")) == spec.to_dict()
    assert ArchitectureSpec.load(path) == spec
    assert ArchitectureSpec.load(str(path)) == spec


def test_load_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        ArchitectureSpec.load(tmp_path / "nope.json")


def test_load_bad_file_raises_value_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{'ops': ", encoding="utf-8")
    with pytest.raises(ValueError):
        ArchitectureSpec.load(path)


# -- errors ---------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 16, 18])
def test_wrong_length_raises(length):
    with pytest.raises(ValueError, match="17") as info:
        ArchitectureSpec(["ssp"] * length)
    assert str(length) in str(info.value)


@pytest.mark.parametrize("ops", ["ssp", None, 17])
def test_non_list_ops_raise(ops):
    with pytest.raises(ValueError, match="ops"):
        ArchitectureSpec(ops)


@pytest.mark.parametrize("bad", ["avg4", "SSP", "", ("ssp", "max9"), 3])
def test_unknown_op_names_valid_ones(bad):
    ops = ["identity"] * 16 + [bad]
    with pytest.raises(ValueError) as info:
        ArchitectureSpec(ops)
    message = str(info.value)
    assert "block 16" in message
    for valid in CANDIDATE_OPS:
        assert valid in message


@pytest.mark.parametrize("pair", [("ssp", "ssp"), ["avg3", "avg3"], ("ssp", "avg3", "max3"), ()])
def test_bad_pairs_raise(pair):
    with pytest.raises(ValueError, match="block 4"):
        ArchitectureSpec(["ssp"] * 4 + [pair] + ["ssp"] * 12)


@pytest.mark.parametrize("pair", [("identity", "ssp"), ("avg3", "identity")])
def test_pairs_with_identity_are_accepted(pair):
    # PMPL's late stage fixes an undecided point to its top two ops, which
    # may include identity (x + op(x)); commit 3bfb880 made this valid.
    spec = ArchitectureSpec(["ssp"] * 4 + [list(pair)] + ["ssp"] * 12)
    assert spec[4] == pair
    assert 4 in spec.points
    assert ArchitectureSpec.from_json(spec.to_json()) == spec
    assert eval(repr(spec), {"ArchitectureSpec": ArchitectureSpec}) == spec  # noqa: S307


def test_search_in_a_pair_raises():
    with pytest.raises(ValueError):
        ArchitectureSpec(["ssp"] * 16 + [("search", "ssp")])


def test_hidden_placement_with_op_at_block_0_raises():
    with pytest.raises(ValueError, match="block 0"):
        ArchitectureSpec(["ssp"] * 17, placement="hidden")
    with pytest.raises(ValueError, match="block 0"):
        ArchitectureSpec(["search"] * 17, placement="hidden")
    # Blocks 1..16 are fine at the hidden placement.
    assert ArchitectureSpec(["identity"] + ["ssp"] * 16, placement="hidden").points == tuple(
        range(1, 17)
    )


def test_unknown_placement_raises():
    with pytest.raises(ValueError, match="placement"):
        ArchitectureSpec(["ssp"] * 17, placement="input")


@pytest.mark.parametrize("candidates", [("ssp",), ("ssp", "ssp"), ("ssp", "avg4"), ()])
def test_bad_candidates_raise(candidates):
    with pytest.raises(ValueError, match="candidates"):
        ArchitectureSpec(["search"] * 17, candidates=candidates)


def test_unknown_dict_keys_raise():
    config = ArchitectureSpec.paper().to_dict()
    config["temperature"] = 1.0
    with pytest.raises(ValueError, match="temperature"):
        ArchitectureSpec.from_dict(config)


@pytest.mark.parametrize("config", [{}, {"placement": "output"}, ["ssp"] * 17, None])
def test_dict_without_ops_raises(config):
    with pytest.raises(ValueError, match="ops"):
        ArchitectureSpec.from_dict(config)


@pytest.mark.parametrize("text", ["{not json", "", '{"ops": ["ssp"]', "[1, 2, 3]", '"paper"'])
def test_bad_json_raises_value_error(text):
    with pytest.raises(ValueError):
        ArchitectureSpec.from_json(text)


def test_json_with_wrong_content_raises_value_error():
    config = ArchitectureSpec.paper().to_dict()
    config["ops"] = config["ops"][:-1]
    with pytest.raises(ValueError, match="17"):
        ArchitectureSpec.from_json(json.dumps(config))
    # A hand-edited "false" (a string) would have been true.
    config = dict(ArchitectureSpec.paper().to_dict(), post_norm="false")
    with pytest.raises(ValueError, match="`post_norm` must be true or false, got 'false'"):
        ArchitectureSpec.from_json(json.dumps(config))


# -- resolve_spec ---------------------------------------------------------------


def test_resolve_spec_presets_and_dicts():
    assert resolve_spec("paper") == ArchitectureSpec.paper()
    assert resolve_spec("none") == ArchitectureSpec.plain()
    assert resolve_spec("search") == ArchitectureSpec.search()
    assert resolve_spec("search", placement="hidden") == ArchitectureSpec.search("hidden")
    assert resolve_spec("search", search_candidates=("ssp", "avg3")).candidates == ("ssp", "avg3")
    spec = custom_spec()
    assert resolve_spec(spec) is spec
    assert resolve_spec(spec.to_dict()) == spec
    assert resolve_spec(spec, placement="output") is spec


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"meta_pooling": "ssp"}, "meta_pooling"),
        ({"meta_pooling": None}, "meta_pooling"),
        ({"meta_pooling": "paper", "placement": "middle"}, "placement"),
        ({"meta_pooling": "paper", "placement": "hidden"}, "paper"),
        ({"meta_pooling": ArchitectureSpec.search("hidden"), "placement": "output"}, "placement"),
        ({"meta_pooling": "paper", "search_candidates": ("ssp", "avg3")}, "search_candidates"),
        ({"meta_pooling": ArchitectureSpec.paper(), "search_candidates": ("ssp", "avg3")},
         "search_candidates"),
    ],
)  # fmt: skip
def test_resolve_spec_errors_name_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        resolve_spec(**kwargs)


# -- candidate pruning -----------------------------------------------------------------
def test_prune_candidates_drops_windows_larger_than_the_map():
    from keras_metapool.layers.candidate_ops import prune_candidates

    assert prune_candidates(DEFAULT_CANDIDATES, (2, 2)) == ("identity", "ssp")
    assert prune_candidates(DEFAULT_CANDIDATES, (4, 4)) == ("identity", "ssp", "max3", "avg3")
    assert prune_candidates(DEFAULT_CANDIDATES, (8, 5)) == (
        "identity", "ssp", "max3", "max5", "avg3", "avg5",
    )  # fmt: skip
    assert prune_candidates(DEFAULT_CANDIDATES, (7, 7)) == DEFAULT_CANDIDATES
    assert prune_candidates(DEFAULT_CANDIDATES, (None, None)) == DEFAULT_CANDIDATES


@pytest.mark.slow
def test_pruned_search_spec_lists_each_points_candidates_and_round_trips():
    from keras_metapool.models.mobilenet_v2_mp import block_map_sizes

    sizes = block_map_sizes(64, 64)
    assert sizes[0] == (32, 32) and sizes[6] == (4, 4) and sizes[16] == (2, 2)
    spec = ArchitectureSpec.search().pruned_for_input(sizes)
    for index in range(13, 17):  # 2x2 maps: no pooling window larger than the map
        assert spec.candidates_at(index) == ("identity", "ssp")
    assert spec.candidates_at(8) == ("identity", "ssp", "max3", "avg3")
    assert spec.candidates_at(3) == DEFAULT_CANDIDATES  # 8x8: all fit
    again = ArchitectureSpec.from_json(spec.to_json())
    assert again == spec and again.candidates_at(16) == ("identity", "ssp")
    assert eval(repr(spec), {"ArchitectureSpec": ArchitectureSpec}) == spec
    # A point whose candidates the spec lists keeps them; the others are pruned.
    again = spec.pruned_for_input(block_map_sizes(32, 32))  # block 8: 2x2, block 3: 4x4
    assert again.candidates_at(8) == ("identity", "ssp", "max3", "avg3")
    assert again.candidates_at(3) == ("identity", "ssp", "max3", "avg3")
    # The model's points carry the pruned lists.
    from keras_metapool import MobileNetV2MP
    from keras_metapool.search import search_blocks

    model = MobileNetV2MP(weights=None, input_shape=(64, 64, 3), alpha=0.35, classes=3)
    blocks = search_blocks(model)
    assert all(blocks[i].candidates == spec.candidates_at(i) for i in blocks)


def test_point_candidates_are_validated():
    ops = ["search"] * 17
    for wrong in ([None], 5, "identity"):
        with pytest.raises(ValueError, match="must list 17 entries"):
            ArchitectureSpec(ops, point_candidates=wrong)
    bad = [None] * 17
    bad[3] = ["identity", "avg9"]
    with pytest.raises(ValueError, match=r"Unknown candidate op 'avg9' in `point_candidates\[3\]`"):
        ArchitectureSpec(ops, point_candidates=bad)
    bad[3] = ["identity"]
    with pytest.raises(ValueError, match="must be >= 2 distinct op names"):
        ArchitectureSpec(ops, point_candidates=bad)
    bad[3] = ["identity", "ssp"]
    with pytest.raises(ValueError, match="whose entry is 'ssp', not 'search'"):
        ArchitectureSpec(["ssp"] * 17, point_candidates=bad)


@pytest.mark.parametrize("empty", [[], ()])
def test_empty_search_candidates_are_refused_not_read_as_all(empty):
    with pytest.raises(ValueError, match=">= 2 distinct op names"):
        resolve_spec("search", None, empty)
    assert resolve_spec("search", None, None).candidates == DEFAULT_CANDIDATES
