"""The studio's statistics against values computed by hand (each test's comment shows the arithmetic)."""

import math

import pytest

from tunesmith.studio import stats


def test_cohen_kappa_of_the_textbook_table():
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15.
    # po = 35/50 = 0.7; A says yes 25/50, B 30/50; pe = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = (0.7-0.5)/(1-0.5) = 0.4
    a = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert stats.percent_agreement(a, b) == pytest.approx(0.7)
    assert stats.cohen_kappa(a, b) == pytest.approx(0.4)


def test_kappa_perfect_chance_and_undefined():
    assert stats.cohen_kappa([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    # po = 0.5; each rater half 1s: pe = 0.5 -> kappa 0
    assert stats.cohen_kappa([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.0)
    assert math.isnan(stats.cohen_kappa([1, 1, 1], [1, 1, 1]))  # one label throughout: pe = 1, undefined


def test_quadratic_weighted_kappa_by_hand():
    # categories 1, 2, 3 (k = 3): weights (|i-j|/2)^2 -> 0, 0.25, 1.
    # pairs: (1,1) (2,3) (3,3) (1,2): observed mean weight = (0 + 0.25 + 0 + 0.25) / 4 = 0.125
    # A: 1 twice, 2 once, 3 once; B: 1 once, 2 once, 3 twice. expected = sum w_ij nA_i nB_j / 16
    #   = [w12 (2*1) + w13 (2*2) + w21 (1*1) + w23 (1*2) + w31 (1*1) + w32 (1*1)] / 16
    #   = [0.25*2 + 1*4 + 0.25*1 + 0.25*2 + 1*1 + 0.25*1] / 16 = 6.5 / 16 = 0.40625
    # kappa = 1 - 0.125 / 0.40625 = 0.6923...
    a, b = [1, 2, 3, 1], [1, 3, 3, 2]
    assert stats.cohen_kappa(a, b, categories=[1, 2, 3], weights="quadratic") == pytest.approx(1 - 0.125 / 0.40625)


def test_agreement_over_items_rated_by_two_or_more():
    labels = {1: {"ann": "a", "bob": "a"}, 2: {"ann": "b", "bob": "a"}, 3: {"ann": "a"},
              4: {"ann": "tie", "bob": "tie", "cy": "a"}}
    out = stats.agreement(labels, ["a", "b", "tie", "both_bad"])
    assert out["items"] == 3  # item 3 has one rater
    by_pair = {p["raters"]: p for p in out["pairs"]}
    assert by_pair[("ann", "bob")]["items"] == 3 and by_pair[("ann", "bob")]["agreement"] == pytest.approx(2 / 3)
    assert by_pair[("ann", "cy")]["agreement"] == 0 and by_pair[("bob", "cy")]["items"] == 1
    # overall agreement: item-weighted mean over the rater pairs: (3 * 2/3 + 1 * 0 + 1 * 0) / 5 = 0.4
    assert out["agreement"] == pytest.approx(0.4)


def test_wilson_interval_by_hand():
    # 8 of 10, z = 1.96: centre = (0.8 + 1.96²/20) / (1 + 1.96²/10) = 0.7167; half = 1.96·sqrt(0.016 + 0.0096)/1.3842 = 0.2266
    low, high = stats.wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert stats.wilson(0, 10)[0] == pytest.approx(0) and stats.wilson(10, 10)[1] == pytest.approx(1)
    assert stats.wilson(0, 0) == (0.0, 1.0)


def test_win_rates_count_ties_and_both_bad_as_half():
    outcomes = [("base", "dpo", "b")] * 6 + [("dpo", "base", "b")] * 2 + [("base", "dpo", "tie")] * 1 + \
        [("base", "dpo", "both_bad")] * 1 + [("base", "base", "a")]  # a model against itself is left out
    w = stats.win_rates(outcomes)
    assert w["dpo"] == {**w["dpo"], "wins": 6, "losses": 2, "ties": 1, "both_bad": 1, "n": 10}
    assert w["dpo"]["rate"] == pytest.approx(0.7)  # (6 + 0.5 * 2) / 10
    assert w["base"]["rate"] == pytest.approx(0.3)
    assert (w["dpo"]["low"], w["dpo"]["high"]) == pytest.approx(stats.wilson(7, 10))


def test_bradley_terry_two_models_is_the_log_odds():
    # A beats B 3 times, B beats A once: p_A / p_B = 3, log-strengths ±ln(3)/2
    bt = stats.bradley_terry([("A", "B", "a")] * 3 + [("A", "B", "b")])
    assert bt["A"] - bt["B"] == pytest.approx(math.log(3))
    assert bt["A"] + bt["B"] == pytest.approx(0)


def test_bradley_terry_three_models_recovers_strengths_4_2_1():
    # With strengths p = (4, 2, 1) the expected wins are A-B 2:1 (3 games), A-C 4:1 (5), B-C 2:1 (3). These counts
    # satisfy the likelihood equations W_i = sum_j n_ij p_i / (p_i + p_j) exactly, so the MLE is p ∝ (4, 2, 1).
    outcomes = [("A", "B", "a")] * 2 + [("A", "B", "b")] + [("A", "C", "a")] * 4 + [("A", "C", "b")] + \
        [("B", "C", "a")] * 2 + [("B", "C", "b")]
    bt = stats.bradley_terry(outcomes)
    centre = (math.log(4) + math.log(2) + math.log(1)) / 3
    assert bt["A"] == pytest.approx(math.log(4) - centre, abs=1e-6)
    assert bt["B"] == pytest.approx(math.log(2) - centre, abs=1e-6)
    assert bt["C"] == pytest.approx(-centre, abs=1e-6)


def test_bradley_terry_ties_count_half_and_a_sweep_needs_the_prior():
    bt = stats.bradley_terry([("A", "B", "tie")] * 4)
    assert bt["A"] == pytest.approx(0) and bt["B"] == pytest.approx(0)
    swept = stats.bradley_terry([("A", "B", "a")] * 3)
    assert swept["B"] == -math.inf
    # with 0.5 virtual wins each way: A 3.5, B 0.5 -> ln(7) apart
    assert (lambda s: s["A"] - s["B"])(stats.bradley_terry([("A", "B", "a")] * 3, prior=0.5)) == pytest.approx(math.log(7))


def test_rating_distributions():
    out = stats.distribution({"m": [1, 1, 0, 1]}, (0, 1))
    assert out["m"]["counts"] == {0: 1, 1: 3} and out["m"]["mean"] == pytest.approx(0.75)
    assert (out["m"]["low"], out["m"]["high"]) == pytest.approx(stats.wilson(3, 4))
    stars = stats.distribution({"m": [5, 3, 4]}, (1, 2, 3, 4, 5))["m"]
    # mean 4, sd 1, half width 1.96 / sqrt(3)
    assert stars["mean"] == pytest.approx(4) and stars["high"] - 4 == pytest.approx(1.959964 / math.sqrt(3), abs=1e-5)
