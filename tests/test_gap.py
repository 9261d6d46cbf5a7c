"""The gap on one scale (fakesegment_nb.gap) on plain vectors: exactness of the fast routes,
behaviour under the null, monotone response to a shift, per-image ranking, degenerate input."""

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from fakesegment_nb import c2st as c2st_module
from fakesegment_nb import gap
from fakesegment_nb.gap import c2st, fid_floor, fid_interval, frechet, layer_gap, realism_scores
from fakesegment_nb.metrics import fid


def correlated(n, c, seed, mix=None):
    """Gaussian vectors with a shared, non-diagonal covariance (``mix`` fixes it across calls)."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(1234).normal(size=(c, c)) / np.sqrt(c) if mix is None else mix
    return rng.normal(size=(n, c)) @ mix + 3.0


def precise_fid(x, y, digits=40):
    """Independent reference in 40-digit arithmetic (mpmath): tr((Σx Σy)^½) through the
    symmetric Σx^½ Σy Σx^½, whose zero eigenvalues then stay far below the result's precision."""
    import mpmath

    mpmath.mp.dps = digits
    def cov(a):  # in 40 digits too: float64 rounding would lift the zero eigenvalues to ~1e-16
        m = mpmath.matrix(a.tolist())
        mean = [mpmath.fsum(m[i, j] for i in range(m.rows)) / m.rows for j in range(m.cols)]
        c = mpmath.matrix(m.rows, m.cols)
        for i in range(m.rows):
            for j in range(m.cols):
                c[i, j] = m[i, j] - mean[j]
        return c.T * c / (m.rows - 1)

    cx, cy = cov(x), cov(y)
    w, v = mpmath.eigsy(cx)
    root = v * mpmath.diag([mpmath.sqrt(max(e, 0)) for e in w]) * v.T
    lam = mpmath.eigsy(root * cy * root, eigvals_only=True)
    trace = sum(cx[i, i] + cy[i, i] for i in range(cx.rows))
    d = x.mean(0) - y.mean(0)
    return float(d @ d + trace - 2 * sum(mpmath.sqrt(max(e, 0)) for e in lam))


@pytest.mark.parametrize("n,c", [(6, 24), (30, 12)])  # fewer images than channels, and more
def test_frechet_matches_a_40_digit_reference(n, c):
    x, y = correlated(n, c, 0), correlated(n + 3, c, 1) + 0.05
    assert frechet(x, y) == pytest.approx(precise_fid(x, y), rel=1e-11)


@pytest.mark.parametrize("n,c", [(12, 512), (40, 64), (300, 32), (60, 1024)])
def test_frechet_is_the_contract_fid(n, c):
    x, y = correlated(n, c, 0), correlated(n + 3, c, 1) + 0.05
    assert gap._frechet_replicate(x, y) == pytest.approx(frechet(x, y), rel=1e-7)
    # metrics.fid takes the eigenvalues of the non-symmetric product: with n < C its
    # near-zero eigenvalues add noise of order 1e-8 relative (frechet's SVD route does not)
    assert frechet(x, y) == pytest.approx(fid(x, y), rel=1e-7 if n < c else 1e-10)


def test_fid_interval_holds_fid_and_narrows_with_images():
    widths = []
    for n in (20, 80, 320):
        x, y = correlated(n, 16, 2), correlated(n, 16, 3) + 0.3
        f = fid(x, y)
        lo, hi, note = fid_interval(x, y, seed=0)
        assert lo <= f <= hi and note == ""
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2], widths
    # seeded: the same numbers again
    assert fid_interval(x, y, seed=0) == fid_interval(x, y, seed=0)


def test_two_halves_of_one_real_set_show_no_gap():
    """20 random splits of one real set: the permutation p-value is rarely small, the AUROC
    sits at chance and fid_ratio at the noise floor's scale."""
    rng = np.random.default_rng(7)
    real = correlated(80, 32, 4)
    ps, aurocs, ratios = [], [], []
    for i in range(20):
        p = rng.permutation(len(real))
        g = layer_gap(real[p[:40]], real[p[40:]], seed=i, scores=False)
        ps.append(g.columns["c2st_p"])
        aurocs.append(g.columns["c2st_auroc"])
        ratios.append(g.columns["fid_ratio"])
    assert sum(p < 0.05 for p in ps) <= 3, ps
    assert abs(np.mean(aurocs) - 0.5) < 0.08, aurocs
    # the floor compares halves of the real images (20 vs 20 here), fid the full sets (40 vs 40):
    # fid's finite-sample bias is smaller, so under the null the ratio sits a little below 1
    assert 0.5 < np.median(ratios) < 1.3, ratios


def test_gap_rises_with_the_shift():
    real = correlated(60, 32, 5)
    rows = [layer_gap(real, correlated(60, 32, 6) + s, seed=0, scores=False).columns for s in (0.0, 0.3, 1.0)]
    aurocs = [r["c2st_auroc"] for r in rows]
    ratios = [r["fid_ratio"] for r in rows]
    assert np.all(np.diff(aurocs) > 0) and np.all(np.diff(ratios) > 0), (aurocs, ratios)
    assert aurocs[-1] > 0.95 and rows[-1]["c2st_p"] == pytest.approx(1 / 101)  # the p-value's floor
    assert rows[0]["c2st_p"] > 0.05


def test_scores_rank_severe_renders_above_mild_ones():
    c = 48
    real = correlated(60, c, 8)
    direction = np.random.default_rng(9).normal(size=c)
    direction /= np.linalg.norm(direction)
    mild = correlated(30, c, 10) + 2.0 * direction  # a shift of 2 (channel sd ~1) ...
    severe = correlated(30, c, 11) + 6.0 * direction  # ... and of 6
    scores, note = realism_scores(real, np.concatenate([mild, severe]))
    assert note == "" and np.isfinite(scores).all()
    kind = np.r_[np.zeros(30), np.ones(30)]
    assert roc_auc_score(kind, scores) > 0.9
    # an unshifted synthetic set scores like held-out real images
    same, _ = realism_scores(real, correlated(60, c, 12))
    assert 0.8 < np.median(same) < 1.25


def test_pairs_stay_together():
    """Twins: synthetic = real + a little noise. Folds that split a pair put the twin in the
    training data, which then calls its real image synthetic: AUROC far below 0.5."""
    real = correlated(30, 24, 13)
    twins = real + np.random.default_rng(14).normal(0, 0.05, real.shape)
    split = c2st(real, twins, permutations=0)
    kept = c2st(real, twins, pair_of=np.arange(30), permutations=100)
    assert split.auroc < 0.2
    assert kept.auroc > 0.3 and kept.p > 0.05
    # the paired bootstrap keeps twins together: a tight interval about the small fid
    lo, hi, _ = fid_interval(real, twins, pair_of=np.arange(30))
    assert lo <= fid(real, twins) <= hi and hi < fid_floor(real)[0]
    with pytest.raises(ValueError, match="pair_of"):
        c2st(real, twins, pair_of=np.zeros(30, int))


def test_joint_block_fit_equals_separate_sklearn_fits():
    rng = np.random.default_rng(15)
    z = rng.normal(size=(40, 12))
    labels = np.r_[np.zeros(20, int), np.ones(20, int)]
    z[labels == 1, :3] += 0.8
    splits = list(StratifiedKFold(5, shuffle=True, random_state=0).split(z, labels))
    orders = [np.arange(40), rng.permutation(40), rng.permutation(40)]
    joint = c2st_module._fit_decisions(z, orders, labels, splits, 0.1)
    for j, o in enumerate(orders):
        ones = np.ones((40, 1))
        zo = np.hstack([z[o], ones])
        for train, test in splits:
            m = LogisticRegression(C=0.1, fit_intercept=False, tol=1e-10, max_iter=10_000).fit(zo[train], labels[train])
            exact = zo[test] @ m.coef_[0]
            # to the solver's tolerance (1e-4 on the gradient): decisions of order 1 agree to ~1e-4
            np.testing.assert_allclose(joint[test, j], exact, atol=2e-3 * np.abs(exact).max())
    # replicate AUROCs (Mann-Whitney U) are sklearn's AUROC
    for j in range(3):
        assert c2st_module._aurocs(labels, joint[:, [j]])[0] == pytest.approx(roc_auc_score(labels, joint[:, j]), abs=1e-12)


def test_a_floor_shared_by_several_sets_gives_each_its_own_gap():
    """stats computes the real images' noise floor once per layer for every set: the same gap."""
    real = correlated(20, 8, 20)
    for shift in (0.0, 0.5):
        syn = correlated(15, 8, 21) + shift
        own = layer_gap(real, syn, scores=False, permutations=20)
        shared = layer_gap(real, syn, scores=False, permutations=20, floor=fid_floor(real))
        assert (own.columns, own.extra) == (shared.columns, shared.extra)
        given = layer_gap(real, syn, scores=False, permutations=0, floor=(2.0, ""))  # the floor given is the one used
        assert given.columns["fid_floor"] == 2.0 and given.columns["fid_ratio"] == pytest.approx(frechet(real, syn) / 2)


def test_degenerate_input_gives_nan_and_a_note():
    x = correlated(10, 8, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = layer_gap(x, x[:1] + 1)  # one synthetic image
        assert np.isnan([one.columns[k] for k in ("fid_lo", "fid_hi", "c2st_auroc", "c2st_p")]).all()
        assert "2 images per domain" in one.extra["note"] and "folds=5" in one.extra["note"]
        assert np.isfinite(one.columns["fid_floor"]) and np.isfinite(one.scores).all()
        few = c2st(x[:4], x[4:], folds=5)  # 4 real images, 5 folds
        assert np.isnan(few.auroc) and "fewer than folds=5" in few.note
        const = np.ones((10, 8))
        g = layer_gap(const, const)
        assert np.isnan(g.columns["c2st_auroc"]) and "constant" in g.extra["note"]
        assert np.isnan(g.columns["fid_ratio"]) and np.isnan(g.scores).all()
        assert "noise floor is 0" in g.extra["note"] and "constant over the real images" in g.extra["note"]
        tiny = layer_gap(x[:2], x[2:4])
        assert np.isnan(tiny.columns["fid_floor"]) and "needs 4 real images" in tiny.extra["note"]
        assert np.isnan(tiny.scores).all() and "needs 3 real images" in tiny.extra["note"]
        bad = x.copy()
        bad[0, 0] = np.nan
        b = layer_gap(bad, x)
        assert np.isnan(list(b.columns.values())).all() and "non-finite" in b.extra["note"]
    with pytest.raises(ValueError, match="folds"):
        c2st(x, x, folds=1)
    with pytest.raises(ValueError, match="channels"):
        frechet(x, x[:, :3])
