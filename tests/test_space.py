"""The declarative space language: grid expansion, seeded sampling, validation, the unit box."""

import math

import numpy as np
import pytest

from search_spaces import Categorical, Fixed, Float, Int, LogFloat, Space, SpaceError, load_space


def test_classic_svm_grid_has_36_trials_without_duplicates():
    space = load_space("svm")
    grid = space.grid()
    assert len(grid) == 4 + 16 + 16 == 36
    # Inactive conditional params never appear, so no two trials are the same config.
    assert len({tuple(sorted(c.items())) for c in grid}) == 36
    linear = [c for c in grid if c["kernel"] == "linear"]
    assert len(linear) == 4 and all("gamma" not in c and "degree" not in c for c in linear)
    poly = [c for c in grid if c["kernel"] == "poly"]
    assert len(poly) == 16 and all(c["degree"] == 3 for c in poly)
    rbf = [c for c in grid if c["kernel"] == "rbf"]
    assert len(rbf) == 16 and all("degree" not in c and "gamma" in c for c in rbf)
    assert {c["C"] for c in grid} == {0.1, 1.0, 10.0, 100.0}


def test_grid_order_puts_first_param_outermost():
    grid = load_space("svm").grid()
    assert [c["kernel"] for c in grid[:5]] == ["linear"] * 4 + ["poly"]
    assert grid[4] == {"kernel": "poly", "C": 0.1, "gamma": 0.1, "degree": 3}


def test_fine_grid_is_about_300():
    assert load_space("svm_fine").grid_size() == 12 + 144 + 144


def test_grid_needs_values_for_continuous_params():
    space = Space(lr=LogFloat(1e-5, 1e-1)).validate()
    with pytest.raises(SpaceError, match="'lr'.*no grid values"):
        space.grid()


def test_small_int_range_enumerates_and_fixed_passes_through():
    space = Space(n=Int(1, 3), mode=Fixed("x")).validate()
    assert space.grid() == [{"n": 1, "mode": "x"}, {"n": 2, "mode": "x"}, {"n": 3, "mode": "x"}]


def test_random_sampling_is_seeded_and_honors_conditions():
    space = load_space("svm")
    a, b, c = space.sample(50, seed=7), space.sample(50, seed=7), space.sample(50, seed=8)
    assert a == b
    assert a != c
    for config in a:
        space.check_config(config)  # valid, and inactive params absent
        assert ("gamma" in config) == (config["kernel"] in ("poly", "rbf"))
        assert ("degree" in config) == (config["kernel"] == "poly")


def test_random_sampling_is_log_uniform_for_log_params():
    space = Space(C=LogFloat(1e-3, 1e3)).validate()
    values = np.array([c["C"] for c in space.sample(4000, seed=0)])
    # Log-uniform over six decades: each decade holds about a sixth of the draws.
    decades = np.histogram(np.log10(values), bins=6, range=(-3, 3))[0] / len(values)
    assert np.all(np.abs(decades - 1 / 6) < 0.03)
    # A linear draw would put ~99.9% above 1; log-uniform puts half below 1.
    assert 0.45 < np.mean(values < 1.0) < 0.55


def test_int_sampling_covers_range_inclusively():
    space = Space(n=Int(2, 5)).validate()
    values = {c["n"] for c in space.sample(400, seed=1)}
    assert values == {2, 3, 4, 5}
    assert all(isinstance(v, int) for v in values)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"C": Float(10, 1)}, "parameter 'C': low \\(10\\) must be less than high \\(1\\)"),
        ({"C": Float(1, 1)}, "parameter 'C': low"),
        ({"C": LogFloat(0, 10)}, "parameter 'C': a log range must be above zero"),
        ({"C": LogFloat(-1, 10)}, "parameter 'C': a log range must be above zero"),
        ({"C": LogFloat(0.1, 10, grid=[0.1, 100])}, "parameter 'C': grid value 100 is outside"),
        ({"k": Categorical(["a"]), "g": Float(0, 1, when={"kernel": ["rbf"]})},
         "parameter 'g': condition on unknown parameter 'kernel'"),
        ({"k": Categorical(["a", "b"]), "g": Float(0, 1, when={"k": ["c"]})},
         "parameter 'g': condition value 'c' for 'k' is not one of"),
        ({"x": Float(0, 1), "g": Float(0, 1, when={"x": [0.5]})}, "parameter 'g': condition on 'x', which is continuous"),
        ({"k": Categorical([])}, "parameter 'k': choices must be a non-empty list"),
        ({"n": Int(1.5, 3)}, "parameter 'n': low and high must be integers"),
        # A string is one value, not its letters as choices (trials 'r', 'b' and 'f' before).
        ({"kernel": Categorical("rbf")}, "parameter 'kernel': choices must be a list, not the "
                                         "string 'rbf'"),
        # A dict's int keys come back from JSON as text: after --resume, sklearn refused them.
        ({"cw": Categorical([{0: 1, 1: 2}, None])}, "parameter 'cw': choice \\{0: 1, 1: 2\\} is a "
                                                  "dict; choices and fixed values must be"),
        ({"h": Fixed((64, 32))}, "parameter 'h': value \\(64, 32\\) is a tuple"),
        # Beyond int64 the run died writing trials.parquet, after Ray had started.
        ({"m": Fixed(10**20)}, "parameter 'm': value 100000000000000000000 does not fit a 64-bit"),
        ({"m": Categorical([1, -(2**63) - 1])}, "parameter 'm': choice -9223372036854775809 does"),
        ({"m": Int(1, 2**63)}, "parameter 'm': 9223372036854775808 does not fit a 64-bit"),
        ({"a": Categorical(["x"], when={"b": ["y"]}), "b": Categorical(["y"], when={"a": ["x"]})},
         "conditions form a cycle"),
    ],
)
def test_malformed_spaces_name_the_parameter(params, message):
    with pytest.raises(SpaceError, match=message):
        Space(params).validate()


def test_unknown_space_module_and_file(tmp_path):
    with pytest.raises(SpaceError, match="unknown space 'nope'"):
        load_space("nope")
    with pytest.raises(SpaceError, match="does not exist"):
        load_space(str(tmp_path / "missing.py"))
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(SpaceError, match="defines no SPACE"):
        load_space(str(empty))


def test_space_from_file(tmp_path):
    path = tmp_path / "myspace.py"
    path.write_text(
        "from search_spaces.space import Space, Categorical, LogFloat\n"
        "SPACE = Space(kernel=Categorical(['linear']), C=LogFloat(0.01, 10, grid=[0.1, 1]))\n"
    )
    assert load_space(str(path)).grid() == [{"kernel": "linear", "C": 0.1}, {"kernel": "linear", "C": 1.0}]


def test_unit_box_round_trip_and_log_mapping():
    space = load_space("svm")
    for config in space.sample(30, seed=3):
        back = space.from_unit(space.to_unit(config))
        assert back.keys() == config.keys()
        for key, value in config.items():
            if isinstance(value, float):
                assert math.isclose(back[key], value, rel_tol=1e-9)
            else:
                assert back[key] == value
    # Columns: kernel one-hot (3), C, gamma, degree. The middle of a log range is its
    # geometric middle; the largest one-hot column picks the choice.
    mid = space.from_unit([0.1, 0.2, 0.9, 0.5, 0.5, 0.5])
    assert mid["kernel"] == "rbf" and "degree" not in mid
    assert math.isclose(mid["C"], math.sqrt(1e-2 * 1e3), rel_tol=1e-9)


def test_any_point_of_the_box_decodes_to_a_valid_config_and_snaps_onto_it():
    space = load_space("adam_finetune")
    box = space.transform
    rng = np.random.default_rng(0)
    for u in rng.uniform(0, 1, size=(200, box.n_dims)):
        config = space.from_unit(u)
        assert space.check_config(config) == config
        snapped = box.snap(u)
        # Snapping keeps the config (floats up to the log/exp round trip) and is idempotent.
        again = space.from_unit(snapped)
        assert again.keys() == config.keys()
        for key, value in config.items():
            assert again[key] == (pytest.approx(value, rel=1e-12) if isinstance(value, float)
                                  else value), key
        assert np.allclose(box.snap(snapped), snapped, rtol=0, atol=1e-12)
    # Ints: every integer gets an equal share of a uniform draw (no edge value starved).
    ints = Space(n=Int(1, 4)).validate()
    counts = np.bincount([ints.from_unit([x])["n"] for x in np.linspace(0.0005, 0.9995, 4000)])
    assert counts[0] == 0 and all(abs(c - 1000) <= 5 for c in counts[1:]), counts
    # Inactive params sit at 0.5 in every column, whatever value they would have had.
    svm = load_space("svm")
    a = svm.to_unit({"kernel": "linear", "C": 1.0})
    b = svm.transform.snap(np.array([1.0, 0.0, 0.0, svm.to_unit({"kernel": "linear", "C": 1.0})[3],
                                     0.93, 0.07]))
    assert np.array_equal(a, b) and a[4] == a[5] == 0.5


def test_space_dict_round_trip():
    space = load_space("svm")
    again = Space.from_dict(space.to_dict())
    assert again.grid() == space.grid()
    assert again.sample(5, seed=1) == space.sample(5, seed=1)


# --- float rounding at the limits -------------------------------------------------------------
def _ulps_off(value: float, n: int) -> float:
    """``value`` moved ``n`` ulps (negative: down), computed without any library's rounding."""
    for _ in range(abs(n)):
        value = math.nextafter(value, math.inf if n > 0 else -math.inf)
    return value


@pytest.mark.parametrize("make", [np.logspace, np.geomspace])
def test_numpy_log_grids_reach_the_limits(make):
    # Whatever numpy's rounding of the end points is on this version, a grid built to span the
    # range is accepted and its values land exactly on the limits (never outside them).
    args = (-5, 0, 12) if make is np.logspace else (1e-5, 1.0, 12)
    space = Space(gamma=LogFloat(1e-5, 1.0, grid=list(make(*args)))).validate()
    values = [c["gamma"] for c in space.grid()]
    assert len(values) == 12
    assert values[0] == 1e-5 and values[-1] == 1.0
    assert all(1e-5 <= v <= 1.0 for v in values)
    assert values == sorted(values) and len(set(values)) == 12


@pytest.mark.parametrize("ulps", [-4, -1, 1, 4])
def test_a_few_ulps_off_a_limit_snaps_to_it(ulps):
    low, high = 1e-5, 100.0
    off_low = _ulps_off(low, -abs(ulps))
    off_high = _ulps_off(high, abs(ulps))
    assert off_low < low and off_high > high  # really outside, so the snap is what accepts them
    space = Space(C=LogFloat(low, high, grid=[off_low, 1.0, off_high])).validate()
    assert [c["C"] for c in space.grid()] == [low, 1.0, high]
    # A config (a warm start, a resumed trial) gets the same treatment.
    assert space.check_config({"C": off_high}) == {"C": high}


@pytest.mark.parametrize(
    "value", [_ulps_off(1e-5, -5), _ulps_off(100.0, 5), 1e-5 * (1 - 1e-9), 100.000001, 1e-6]
)
def test_real_violations_still_fail_with_one_line(value):
    with pytest.raises(SpaceError) as info:
        Space(C=LogFloat(1e-5, 100.0, grid=[value])).validate()
    message = str(info.value)
    assert "\n" not in message
    assert message == f"parameter 'C': grid value {value!r} is outside [1e-05, 100.0]"
    space = Space(C=LogFloat(1e-5, 100.0)).validate()
    with pytest.raises(SpaceError, match="is outside"):
        space.check_config({"C": value})


def test_int_grids_and_bounds_computed_in_floats_are_integers():
    bound = math.sqrt(2.0) ** 2  # 2.0000000000000004 in IEEE doubles
    assert bound != 2
    grid = list(np.geomspace(2, 64, 6))  # 2, 4, 8, 16, 32, 64 up to rounding
    space = Space(n=Int(bound, 64, log=True, grid=grid)).validate()
    values = [c["n"] for c in space.grid()]
    # Rounding, not truncation: a value a hair under 8 is 8, never 7.
    assert values == [2, 4, 8, 16, 32, 64]
    assert all(type(v) is int for v in values)
    with pytest.raises(SpaceError, match="parameter 'n': grid value 2.5 is not an integer"):
        Space(n=Int(1, 4, grid=[2.5])).validate()
    with pytest.raises(SpaceError, match="parameter 'n': low and high must be integers"):
        Space(n=Int(1.001, 4)).validate()


def test_a_stored_null_is_a_none_choice_where_active_and_inactive_elsewhere():
    space = Space(kernel=Categorical(["linear", "rbf"]),
                  gamma=LogFloat(1e-3, 1, when={"kernel": ["rbf"]}),
                  class_weight=Categorical([None, "balanced"], when={"kernel": ["rbf"]}),
                  shrinking=Categorical([True, False])).validate()
    # Parquet gives back None or NaN for both; the space's conditions tell them apart.
    assert space.from_record({"kernel": "linear", "gamma": math.nan, "class_weight": None,
                              "shrinking": True}) == {"kernel": "linear", "shrinking": True}
    config = space.from_record({"kernel": "rbf", "gamma": 0.1, "class_weight": None,
                                "shrinking": False})
    assert config == {"kernel": "rbf", "gamma": 0.1, "class_weight": None, "shrinking": False}
    assert space.check_config(config) == config
    assert space.from_record({"kernel": "rbf", "gamma": 0.1, "class_weight": "balanced",
                              "shrinking": False})["class_weight"] == "balanced"
    # A param the record has no column for stays out (an older file, another space).
    assert "class_weight" not in space.from_record({"kernel": "rbf", "gamma": 0.1,
                                                    "shrinking": True})


def test_a_row_of_a_categorical_mixing_text_and_numbers_reads_back_as_its_choice():
    # Such a categorical is a string column in trials.parquet: "0.001" is the choice 0.001.
    space = Space(name="s", gamma=Categorical(["scale", 0.001, 10]),
                  flag=Categorical([True, "auto"]), same=Categorical(["1", 1])).validate()
    assert space.from_record({"gamma": "0.001", "flag": "True", "same": "1"}) == \
        {"gamma": 0.001, "flag": True, "same": "1"}
    assert space.from_record({"gamma": "10", "flag": "auto", "same": "1"})["gamma"] == 10
    assert space.from_record({"gamma": "scale", "flag": "auto", "same": "1"})["gamma"] == "scale"


def test_numpy_values_are_python_values_in_columns_and_after_a_json_round_trip():
    import json

    from pipelines.results import param_type

    # experiment.json is written with default=str: np.int64 choices came back as "2", "3",
    # and every trial run after --resume got a string degree, which SVC refused.
    space = Space(name="s", degree=Categorical(np.arange(2, 4)), shrinking=Categorical(
        [np.True_, np.False_]), tol=Fixed(np.float64(1e-3)), seed=Fixed(np.int64(5)),
        C=LogFloat(np.float32(0.5), 10.0, grid=list(np.array([1.0, 2.0]))),
        coef0=Float(0, 1, when={"degree": list(np.array([3]))})).validate()
    stored = json.loads(json.dumps(space.to_dict(), default=str))
    assert Space.from_dict(stored).to_dict() == space.to_dict()
    assert stored["params"]["degree"]["choices"] == [2, 3]
    assert stored["params"]["coef0"]["when"] == {"degree": [3]}
    assert [type(v) for v in space.params["degree"].choices] == [int, int]
    assert space.params["shrinking"].choices == [True, False]
    assert {name: str(param_type(p)) for name, p in space.params.items()} == {
        "degree": "int64", "shrinking": "bool", "tol": "double", "seed": "int64", "C": "double",
        "coef0": "double"}


def test_an_int_choice_read_back_as_a_float_is_the_int_choice():
    # pandas reads an int64 column with nulls (the choice inactive in some rows) as float64.
    space = Space(name="s", kernel=Categorical(["poly", "rbf"]),
                  degree=Categorical([2, 3], when={"kernel": ["poly"]}),
                  mix=Categorical([1, 1.5])).validate()
    row = space.from_record({"kernel": "poly", "degree": np.float64(3.0), "mix": 1.0})
    assert row == {"kernel": "poly", "degree": 3, "mix": 1}
    assert type(row["degree"]) is int and type(row["mix"]) is int
    assert space.from_record({"kernel": "rbf", "degree": float("nan"), "mix": 1.5}) == \
        {"kernel": "rbf", "mix": 1.5}


def test_an_experiment_stored_before_choices_had_to_be_scalars_still_reads_back():
    # Lists survive experiment.json, and such experiments resumed and rebuilt before the rule:
    # only a space module is held to it.
    stored = {"name": "old", "params": {
        "mean": {"type": "fixed", "value": [0.485, 0.456, 0.406]},
        "hidden": {"type": "categorical", "choices": [[64], [64, 32]]}}}
    space = Space.from_dict(stored)
    assert space.params["mean"].value == [0.485, 0.456, 0.406]
    assert space.to_dict()["params"] == stored["params"]
    with pytest.raises(SpaceError, match="is a list"):
        Space(name="new", mean=Fixed([0.485, 0.456, 0.406])).validate()
