"""The numpy-only calibration shared by the maps and the evaluation's pixel baselines."""

from __future__ import annotations

import numpy as np
import pytest

from fakesegment_nb.calibration import (calibrate, calibrate_batches, calibrate_z, per_image_thresholds, robust_location,
                                        robust_z, shift_cells, shift_fraction)
from fakesegment_nb.errors import ParameterError


def test_shift_cells_repeats_the_border():
    a = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(shift_cells(a, 1, 0), [[0, 1, 2, 3], [0, 1, 2, 3], [4, 5, 6, 7]])
    np.testing.assert_array_equal(shift_cells(a, 0, 1), [[0, 0, 1, 2], [4, 4, 5, 6], [8, 8, 9, 10]])
    np.testing.assert_array_equal(shift_cells(a[None], 0, 0)[0], a)


def test_shift_fraction_interpolates_between_cells():
    a = np.random.default_rng(0).normal(size=(2, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(shift_fraction(a, 1.0, 0.0), shift_cells(a, 1, 0))
    np.testing.assert_allclose(shift_fraction(a, 0.0, 0.25), 0.75 * a + 0.25 * shift_cells(a, 0, 1), rtol=1e-6)
    assert shift_fraction(a.astype(np.float64), 0.5, 0).dtype == np.float32


def test_per_image_thresholds_flag_the_false_positive_rate_of_null_maps():
    rng = np.random.default_rng(1)
    # maps of one shape of noise, each on its own level and scale: per-image thresholds adapt
    null = rng.normal(size=(20, 64, 64)) * rng.uniform(0.5, 3, (20, 1, 1)) + rng.uniform(-5, 5, (20, 1, 1))
    z_star = calibrate_z(null, 0.05)
    assert z_star == pytest.approx(calibrate(robust_z(null), 0.05))
    maps = rng.normal(size=(10, 64, 64)) * 4.0 + 7.0
    thr = per_image_thresholds(maps, z_star)
    med, mad = robust_location(maps)
    np.testing.assert_allclose(thr, med + z_star * mad)
    assert abs((maps > thr[:, None, None]).mean() - 0.05) < 0.01


def test_calibrate_batches_is_calibrate_exactly():
    # the same float from batches (two passes), whatever the ties, signs, zeros and non-finite values
    rng = np.random.default_rng(0)
    cases = [rng.normal(size=5000), rng.integers(-3, 4, 3001), rng.exponential(size=777) * 1e-3,
             np.r_[rng.normal(size=900), [np.nan, np.inf, -np.inf, -0.0, 0.0]], np.full(50, 2.5), [7.0]]
    for v in cases:
        v = np.asarray(v, np.float32)
        for fpr in (0.05, 0.01, 0.5, 0.999):
            parts = np.array_split(v, 7)
            assert calibrate_batches(lambda: iter(parts), fpr) == calibrate(v, fpr)


def test_bad_fpr_names_the_parameter():
    with pytest.raises(ParameterError) as err:
        calibrate([1.0, 2.0], 1.5)
    assert err.value.param == "fpr"


def test_numpy_only():
    import ast

    import fakesegment_nb.calibration as mod

    tree = ast.parse(open(mod.__file__).read())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    relative = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0}
    assert imported <= {"__future__", "numpy"} and relative <= {"errors"}
