"""Ensemble aggregation by hand: mean, z-mean, weighted, disagreement, routing, fitting, YAML."""

import math

import numpy as np
import pytest

from mrm_ray.config import EnsembleConfig, EnsembleMember
from mrm_ray.ensemble import aggregate, fit_weights, load_ensemble, routing_mask, save_ensemble

NAN = float("nan")


def test_mean_and_std_over_the_members_that_scored():
    scores = np.array([[1.0, 2.0, NAN],
                       [3.0, NAN, 5.0]])
    out = aggregate(scores)
    assert out.reward.tolist() == [2.0, 2.0, 5.0]
    assert out.std.tolist() == [1.0, 0.0, 0.0]


def test_z_mean_uses_each_members_statistics():
    scores = np.array([[10.0], [-1.0]])
    out = aggregate(scores, method="z_mean", means=[8.0, 0.0], stds=[2.0, 0.5])
    # z = (10-8)/2 = 1 and (-1-0)/0.5 = -2
    assert out.reward[0] == pytest.approx(-0.5) and out.std[0] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="mean and std"):
        aggregate(scores, method="z_mean")


def test_weighted_mean_renormalises_over_present_members():
    scores = np.array([[1.0, 1.0], [4.0, NAN]])
    out = aggregate(scores, method="accuracy_weighted", weights=[1.0, 3.0], means=[0, 0], stds=[1, 1])
    assert out.reward.tolist() == pytest.approx([(1 + 12) / 4, 1.0])
    assert out.std[0] == pytest.approx(math.sqrt((1 * 2.25**2 + 3 * 0.75**2) / 4))


def test_unscored_item_and_zero_weights_are_errors():
    with pytest.raises(ValueError, match="no member"):
        aggregate(np.array([[NAN], [NAN]]))
    with pytest.raises(ValueError, match="weight 0"):
        aggregate(np.array([[1.0], [NAN]]), method="accuracy_weighted", weights=[0, 1], means=[0, 0], stds=[1, 1])


def test_fit_weights_accuracy_counts_ties_wrong_and_confidence_floors_at_zero():
    chosen = np.array([[1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    rejected = np.array([[0.0, 2.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    assert fit_weights(chosen, rejected, method="accuracy_weighted").tolist() == [0.5, 0.0]
    conf = fit_weights(chosen, rejected, method="confidence_weighted", means=[0, 0], stds=[2.0, 1.0])
    assert conf.tolist() == pytest.approx([(1 + 0 + 2 - 1) / 4 / 2, 0.0])
    assert fit_weights(chosen, rejected, method="mean").tolist() == [1.0, 1.0]


def test_routing_sends_text_only_items_to_text_members():
    mask = routing_mask([("image", "text"), ("text",), ("image",)], [True, False])
    assert mask.tolist() == [[True, True], [False, True], [True, False]]


def test_config_validation_and_yaml_round_trip(tmp_path):
    with pytest.raises(ValueError, match="scores text"):
        EnsembleConfig(members=[EnsembleMember(name="a", path="x", modalities=("image",))])
    with pytest.raises(ValueError, match="unique"):
        EnsembleConfig(members=[EnsembleMember(name="a", path="x"), EnsembleMember(name="a", path="y")])
    with pytest.raises(ValueError, match="method"):
        EnsembleConfig(members=[EnsembleMember(name="a", path="x")], method="median")
    config = EnsembleConfig(members=[EnsembleMember(name="vl", path=str(tmp_path / "m1"), weight=0.7),
                                     EnsembleMember(name="txt", path="models/text", modalities=("text",),
                                                    score_mean=0.5, score_std=2.0),
                                     EnsembleMember(name="demo", path="tiny:3")],
                            method="z_mean", fitted_on={"data": "val.jsonl"})
    path = save_ensemble(config, tmp_path / "ens" / "ensemble.yaml")
    loaded = load_ensemble(path)
    assert loaded.method == "z_mean" and loaded.fitted_on == {"data": "val.jsonl"}
    assert loaded.members[0] == config.members[0]
    # relative paths resolve against the YAML's folder; tiny:SEED stays as it is
    assert loaded.members[1].path == str(tmp_path / "ens" / "models" / "text")
    assert loaded.members[1].modalities == ("text",) and loaded.members[1].score_std == 2.0
    assert loaded.members[2].path == "tiny:3"


# ------------------------------------------------------------------ conservative aggregation (robust rewards)
# three members over four items, z-normalised by (mean, std) = (1, 2), (0, 1), (-2, 0.5); NaN = not routed
RAW = np.array([[3.0, 1.0, NAN, 5.0],
                [1.0, 2.0, -1.0, NAN],
                [-1.5, -2.0, -1.5, NAN]])
STATS = {"means": [1.0, 0.0, -2.0], "stds": [2.0, 1.0, 0.5]}
# z = [[1, 0, -, 2], [1, 2, -1, -], [1, 0, 1, -]]: item 0 all agree, item 1 one member high,
# item 2 two members split, item 3 one member alone


def test_min_is_the_worst_case_over_the_members_that_scored():
    out = aggregate(RAW, method="min", **STATS)
    assert out.reward.tolist() == [1.0, 0.0, -1.0, 2.0]
    assert out.std.tolist() == pytest.approx([0.0, math.sqrt(8 / 9), 1.0, 0.0])


def test_uwo_takes_the_variance_off_the_mean():
    out = aggregate(RAW, method="uwo", uncertainty_coef=0.5, **STATS)
    # means 1, 2/3, 0, 2; population variances 0, 8/9, 1, 0
    assert out.reward.tolist() == pytest.approx([1.0, 2 / 3 - 0.5 * 8 / 9, 0.0 - 0.5, 2.0])
    assert aggregate(RAW, method="uwo", uncertainty_coef=0.0, **STATS).reward.tolist() == \
        pytest.approx(aggregate(RAW, method="z_mean", **STATS).reward.tolist())


def test_lcb_takes_the_std_off_the_mean():
    out = aggregate(RAW, method="lcb", uncertainty_coef=2.0, **STATS)
    assert out.reward.tolist() == pytest.approx([1.0, 2 / 3 - 2 * math.sqrt(8 / 9), -2.0, 2.0])


@pytest.mark.parametrize("method", ["min", "uwo", "lcb"])
def test_one_member_reduces_to_its_own_z_score(method):
    out = aggregate(np.array([[3.0, -1.0]]), method=method, uncertainty_coef=3.0, means=[1.0], stds=[2.0])
    assert out.reward.tolist() == [1.0, -1.0] and out.std.tolist() == [0.0, 0.0]


def test_conservative_methods_ignore_weights_and_refuse_a_bad_coefficient():
    weighted = aggregate(RAW, method="uwo", weights=[9.0, 0.0, 1.0], **STATS)
    assert weighted.reward.tolist() == pytest.approx(aggregate(RAW, method="uwo", **STATS).reward.tolist())
    for coef in (-0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="uncertainty_coef"):
            aggregate(RAW, method="lcb", uncertainty_coef=coef, **STATS)
    with pytest.raises(ValueError, match="mean and std"):
        aggregate(RAW, method="min")
    assert fit_weights(RAW[:, :2], RAW[:, 2:], method="min").tolist() == [1.0, 1.0, 1.0]


def test_ensemble_yaml_holds_the_method_and_coefficient(tmp_path):
    from mrm_ray.config import ConfigError

    config = EnsembleConfig(members=[EnsembleMember(name="a", path="tiny:0")], method="uwo", uncertainty_coef=1.5)
    loaded = load_ensemble(save_ensemble(config, tmp_path / "ensemble.yaml"))
    assert (loaded.method, loaded.uncertainty_coef) == ("uwo", 1.5)
    assert EnsembleConfig(members=config.members).uncertainty_coef == 0.5  # the default
    for bad, field in (("method: median", "method"), ("uncertainty_coef: -1", "uncertainty_coef"),
                       ("uncertainty_coef: .inf", "uncertainty_coef")):
        (tmp_path / "bad.yaml").write_text(f"{bad}\nmembers: [{{name: a, path: 'tiny:0'}}]\n")
        with pytest.raises(ConfigError, match=field):
            load_ensemble(tmp_path / "bad.yaml")
