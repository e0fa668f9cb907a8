"""Mixture YAML loading, count planning and the held-out hash (pure; no Ray)."""

import pytest

from mrm_ray.config import MixtureConfig, SourceConfig
from mrm_ray.config.shipped import names
from mrm_ray.data.mixture import is_held_out, load_mixture, plan_counts
from mrm_ray.data.readers import READERS


def _src(name, weight):
    return SourceConfig(name=name, reader="trl", path="/x", weight=weight)


def test_ratios_without_total_take_the_largest_mixture_without_repeats():
    config = MixtureConfig(sources=(_src("a", 0.5), _src("b", 0.3), _src("c", 0.2)))
    counts = plan_counts(config, {"a": 1000, "b": 120, "c": 5000})
    assert counts == {"a": 200, "b": 120, "c": 80}  # b limits the total to 400
    total = sum(counts.values())
    assert all(abs(counts[k] / total - w) <= 0.02 for k, w in (("a", 0.5), ("b", 0.3), ("c", 0.2)))


def test_counts_all_and_ratios_of_a_total():
    config = MixtureConfig(total=1000, sources=(_src("a", "all"), _src("b", 300), _src("c", 0.25)))
    assert plan_counts(config, {"a": 400, "b": 100, "c": 10_000}) == {"a": 400, "b": 300, "c": 250}


@pytest.mark.parametrize("weight", [0, -3, 1.5, "most", True])
def test_bad_weights_are_refused(weight):
    with pytest.raises(ValueError, match="weight"):
        _src("a", weight)


def test_mixture_validation():
    with pytest.raises(ValueError, match="needs `total`"):
        MixtureConfig(sources=(_src("a", 0.5), _src("b", 10)))
    with pytest.raises(ValueError, match="add up"):
        MixtureConfig(sources=(_src("a", 0.7), _src("b", 0.7)))
    with pytest.raises(ValueError, match="unique"):
        MixtureConfig(sources=(_src("a", 1), _src("a", 2)))


def test_held_out_is_stable_and_near_the_fraction():
    ids = [f"pair-{i}" for i in range(20_000)]
    held = [i for i in ids if is_held_out(i, "s", fraction=0.05, seed=0)]
    assert abs(len(held) / len(ids) - 0.05) < 0.005
    assert held == [i for i in ids if is_held_out(i, "s", fraction=0.05, seed=0)]
    assert held != [i for i in ids if is_held_out(i, "s", fraction=0.05, seed=1)]


def test_yaml_paths_resolve_and_overrides_apply(tmp_path):
    (tmp_path / "m.yaml").write_text(
        "name: m\nheld_out_fraction: 0.1\nsources:\n"
        "  - {name: a, reader: trl, path: data/a.jsonl, weight: 0.6}\n"
        "  - {name: b, reader: chat_messages, path: '', weight: 0.4, options: {image_root: imgs}}\n")
    with pytest.raises(ValueError, match=r"\['b'\] have no path"):
        load_mixture(tmp_path / "m.yaml")
    m = load_mixture(tmp_path / "m.yaml", paths={"b": "/abs/b.jsonl"})
    assert m.sources[0].path == str(tmp_path / "data" / "a.jsonl")
    assert m.sources[1].path == "/abs/b.jsonl" and m.sources[1].options["image_root"] == str(tmp_path / "imgs")
    assert [s.name for s in load_mixture(tmp_path / "m.yaml", skip_missing=True).sources] == ["a"]
    with pytest.raises(ValueError, match="no source named 'c'"):
        load_mixture(tmp_path / "m.yaml", paths={"c": "/x"})


@pytest.mark.parametrize("name", names("mixture"))
def test_every_shipped_mixture_loads_once_filled_in(name):
    import yaml

    from mrm_ray.config.shipped import path as shipped

    raw = yaml.safe_load(shipped("mixture", name).read_text())
    names = [s["name"] for s in raw["sources"]]
    mixture = load_mixture(name, paths={n: f"/data/{n}" for n in names},
                           options={n: {"image_root": "/data/images"} for n in names if n == "mmpr"})
    assert [s.name for s in mixture.sources] == names
    assert all(s.reader in READERS for s in mixture.sources)


def test_basereward_recipe_has_its_seven_sources():
    import yaml

    from mrm_ray.config.shipped import path as shipped

    raw = yaml.safe_load(shipped("mixture", "basereward").read_text())
    assert len(raw["sources"]) == 7
    assert {"rlaif-v", "mmpr", "ultrafeedback-ultra-hard", "tulu3-if"} <= {s["name"] for s in raw["sources"]}
