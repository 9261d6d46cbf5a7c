"""The across-networks sentence (fakesegment_nb.agreement) says what its figures say."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fakesegment_nb.agreement import agreement_sentence

A, B, C = "efficientnet_lite0 (imagenet:a)", "efficientnet_lite1 (imagenet:b)", "efficientnet_lite2 (imagenet:c)"


def _images(rhos, ps, n=20):
    pairs = [(A, B), (A, C), (B, C)][:len(rhos)]
    return pd.DataFrame([{"a": a, "b": b, "rho": r, "p": p, "n": n} for (a, b), r, p in zip(pairs, rhos, ps)])


def _layers(peaks, depths, labels=(A, B, C)):
    return pd.DataFrame([{"label": l, "peak": p, "relative_depth": d, "value": 2.0, "profile": np.ones(4)}
                         for l, p, d in zip(labels, peaks, depths)])


def test_agree_lean_and_disagree_follow_the_figures():
    prof = pd.DataFrame([{"a": A, "b": B, "rho": 1.0}, {"a": A, "b": C, "rho": 1.0}, {"a": B, "b": C, "rho": 1.0}])
    s = agreement_sentence([A, B, C], [], _images([0.8, 0.7, 0.9], [0.001, 0.01, 0.0001]), _layers(["p3"] * 3, [1 / 3] * 3),
                  prof, "fid_ratio")
    assert s.startswith("The trained networks agree") and "0.70 to 0.90" in s and "every p < 0.05" in s
    assert "all 3 networks" in s and "same depth in every network" in s and "orders its layers the same way" in s
    s = agreement_sentence([A, B, C], [], _images([0.4, 0.3, 0.5], [0.08, 0.2, 0.03]), _layers(["p3", "p4", "p3"], [1 / 3, 2 / 3, 1 / 3]),
                  prof.assign(rho=[0.8, 0.4, 1.0]), "fid_ratio")
    assert s.startswith("The trained networks lean the same way") and "largest p 0.2" in s
    assert "peaks at different depths: p3 of efficientnet_lite0" in s and "rho 0.40 to 1.00" in s
    s = agreement_sentence([A, B], [], _images([-0.2], [0.4]), _layers(["p2", "p5"], [0, 1], (A, B)), prof.iloc[:0], "c2st_auroc")
    assert s.startswith("The trained networks do not agree") and "-0.20" in s and "gap (c2st_auroc)" in s


def test_untrained_networks_are_named_smoke_tests_and_left_out():
    smoke = "ssd300_vgg16 (random:0)"
    s = agreement_sentence([A], [smoke], _images([], []), _layers(["p3"], [1 / 3], (A,)), pd.DataFrame(), "fid_ratio")
    assert s.startswith("Only one trained network (efficientnet_lite0): nothing to compare")
    assert "ssd300_vgg16 with random weights is a smoke test, not a second opinion" in s
