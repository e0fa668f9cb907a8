"""Fitting an ensemble from member scores: each member is fitted on the pairs it is routed and can score."""

import numpy as np
import pytest

from mrm_ray.eval.fit import fit_scores

HAS_IMAGE = [True, True, True, False, False, False]
NAN = float("nan")


def _scores(chosen, rejected, *, takes_images=True, errors=None):
    applicable = np.array([takes_images or not i for i in HAS_IMAGE])
    chosen, rejected = np.where(applicable, chosen, np.nan), np.where(applicable, rejected, np.nan)
    return {"chosen": chosen, "rejected": rejected, "errors": errors or [None] * len(HAS_IMAGE),
            "applicable": applicable, "takes_images": takes_images}


def test_a_text_only_member_is_fitted_and_routed_on_the_text_pairs_alone():
    scores = {"vl": _scores(np.array([1., 2., 3., 4., 5., 6.]), np.array([0., 3., 0., 0., 0., 9.])),
              "text": _scores(np.array([NAN, NAN, NAN, 1., 0., 2.]), np.array([NAN, NAN, NAN, 0., 1., 1.]),
                              takes_images=False)}
    config = fit_scores({"vl": "a", "text": "b"}, scores, HAS_IMAGE, method="accuracy_weighted", data={"d": "x"})
    vl, text = config.members
    assert (vl.modalities, text.modalities) == (("image", "text"), ("text",))
    assert vl.weight == pytest.approx(4 / 6) and text.weight == pytest.approx(2 / 3)
    both = np.array([1., 0., 2., 0., 1., 1.])  # the text member's own scores of its three pairs
    assert text.score_mean == pytest.approx(both.mean()) and text.score_std == pytest.approx(both.std())
    assert config.fitted_on["pairs"] == 6 and config.fitted_on["left_out"] == 0
    assert config.fitted_on["accuracy"] == {"vl": pytest.approx(4 / 6), "text": pytest.approx(2 / 3)}


def test_with_text_members_each_side_is_fitted_on_what_it_is_routed():
    scores = {"a": _scores(np.array([1., 2., 3., 9., 9., 9.]), np.array([0., 0., 4., 0., 0., 0.])),
              "b": _scores(np.array([5., 5., 5., 1., 2., 3.]), np.array([0., 0., 0., 2., 1., 0.]),
                           errors=[None, None, None, None, None, "cannot encode: too long"])}
    config = fit_scores({"a": "x", "b": "y"}, scores, HAS_IMAGE, method="z_mean", text_members=["b"], data={})
    a, b = config.members
    assert (a.modalities, b.modalities) == (("image",), ("text",))
    # a: its 3 image pairs; b: its 2 text pairs left once the pair it could not encode is out for everyone
    assert a.score_mean == pytest.approx(np.mean([1., 2., 3., 0., 0., 4.]))
    assert b.score_mean == pytest.approx(np.mean([1., 2., 2., 1.]))
    assert config.fitted_on["pairs"] == 5
    assert config.fitted_on["left_out_reasons"] == {"b: cannot encode: too long": 1}


def test_text_only_members_alone_cannot_make_an_ensemble_for_image_pairs():
    text = _scores(np.array([NAN, NAN, NAN, 1., 0., 2.]), np.array([NAN, NAN, NAN, 0., 1., 1.]), takes_images=False)
    with pytest.raises(ValueError, match="no member scores image inputs"):
        fit_scores({"t": "x"}, {"t": text}, HAS_IMAGE, method="mean", data={})
    vl = _scores(np.array([1., 2., 3., 4., 5., 6.]), np.zeros(6))
    with pytest.raises(ValueError, match=r"member vl scored none of the validation pairs routed to it \(image"):
        fit_scores({"vl": "x", "t": "y"}, {"vl": {**vl, "errors": ["bad"] * 3 + [None] * 3}, "t": text},
                   HAS_IMAGE, method="mean", text_members=["t"], data={})
