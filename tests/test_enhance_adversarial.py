"""The enhancer's optional adversarial term (issue 20): a patch discriminator on the frozen features
that learns to tell real patches from enhanced ones, and a training run that uses it. Whether it
closes more of the gap is measured in benchmarks/bench_enhance_warehouse.py (docs/loss.md)."""

from __future__ import annotations

import pytest
import torch

from fakesegment_nb.cli import main
from fakesegment_nb.enhance import train_enhancer
from fakesegment_nb.enhance.discriminator import PatchDiscriminator, discriminator_loss, generator_loss
from fakesegment_nb.errors import ParameterError

from support import make_pair_dirs


def _bank(c: int, shift: float = 0.0):
    return {"a": (torch.full((c,), shift), torch.eye(c) * 4.0)}


def test_the_discriminator_standardises_by_the_real_moments_and_gives_one_logit_per_location():
    torch.manual_seed(0)
    d = PatchDiscriminator(_bank(5, shift=3.0))
    f = torch.randn(2, 5, 7, 9)
    out = d({"a": f})
    assert out["a"].shape == (2, 1, 7, 9)
    # the head sees (f - 3) / 2: the same logits as an unstandardised head on that input
    assert torch.allclose(out["a"], d.heads["a"]((f - 3.0) / 2.0), atol=1e-6)


def test_the_discriminator_learns_to_separate_shifted_features_and_the_generator_loss_then_rises():
    torch.manual_seed(0)
    d = PatchDiscriminator(_bank(6))
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    real = lambda: {"a": torch.randn(4, 6, 5, 5) * 2}  # noqa: E731  (real: N(0, 4))
    fake = lambda: {"a": torch.randn(4, 6, 5, 5) * 2 + 3}  # noqa: E731  (enhanced: shifted)
    with torch.no_grad():
        start, g_start = float(discriminator_loss(d(real()), d(fake()))), float(generator_loss(d(fake())))
    for _ in range(100):
        loss = discriminator_loss(d(real()), d(fake()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end, g_end = float(discriminator_loss(d(real()), d(fake()))), float(generator_loss(d(fake())))
    assert start > 1.2 and end < 0.4, (start, end)  # chance is 2 log 2 = 1.39; the Bayes optimum here about 0.15
    assert g_end > 2 * g_start, (g_start, g_end)  # the enhanced patches are now called fake


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_pair_dirs(tmp_path_factory.mktemp("adv"), names=("astronaut", "coffee", "chelsea"), size=80)


def test_adversarial_training_is_deterministic_and_recorded_and_differs_from_none(tiny):
    kw = dict(steps=3, batch_size=2, seed=0, progress=False)
    a = train_enhancer(*tiny, None, adversarial=2.0, **kw)
    b = train_enhancer(*tiny, None, adversarial=2.0, **kw)
    plain = train_enhancer(*tiny, None, **kw)
    sa, sb, sp = a.enhancer.state_dict(), b.enhancer.state_dict(), plain.enhancer.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sp[k]) for k in sa)
    assert a.meta["loss"]["adversarial"] == 2.0 and plain.meta["loss"]["adversarial"] == 0.0
    assert all(h["discriminator"] > 0 and h["adversarial"] > 0 for h in a.history)
    assert all(h["discriminator"] == 0 and h["adversarial"] == 0 for h in plain.history)
    assert not any(k.startswith("heads") for k in sa)  # the discriminator is not part of the enhancer


def test_a_negative_adversarial_weight_is_refused_in_one_line(tiny, tmp_path, capsys):
    with pytest.raises(ParameterError, match="adversarial"):
        train_enhancer(*tiny, None, steps=1, adversarial=-1.0, progress=False)
    real, syn = tiny
    code = main(["enhance", "train", "--real", str(real), "--synthetic", str(syn), "--out", str(tmp_path / "e.pt"),
                 "--adversarial", "-1", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("fakesegment: error: --adversarial"), err
    assert not (tmp_path / "e.pt").exists()
