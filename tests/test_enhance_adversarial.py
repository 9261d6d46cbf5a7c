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


def test_the_discriminator_gives_one_logit_per_location_and_ignores_each_images_global_tone():
    torch.manual_seed(0)
    d = PatchDiscriminator({"a": 5})
    f = torch.randn(2, 5, 7, 9)
    out = d({"a": f})
    assert out["a"].shape == (2, 1, 7, 9)
    # a per-image, per-channel gain and offset (a brighter or more contrasty image) changes nothing
    gain, offset = torch.rand(2, 5, 1, 1) + 0.5, torch.randn(2, 5, 1, 1) * 3
    assert torch.allclose(d({"a": f * gain + offset})["a"], out["a"], atol=1e-4)
    g = f.clone()
    g[:, 1] = g[:, 0]  # ... but how the channels vary together from place to place does
    assert not torch.allclose(d({"a": g})["a"], out["a"], atol=1e-2)


def test_the_discriminator_learns_local_structure_and_the_generator_loss_then_rises():
    """Real patches: channel 1 follows channel 0; enhanced ones: it is its mirror image. Same global
    statistics per channel, told apart only patch by patch."""
    torch.manual_seed(0)
    d = PatchDiscriminator({"a": 6})
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)

    def batch(sign):
        x = torch.randn(4, 6, 5, 5)
        x[:, 1] = sign * x[:, 0] + 0.1 * torch.randn(4, 5, 5)
        return {"a": x}

    with torch.no_grad():
        start, g_start = float(discriminator_loss(d(batch(1)), d(batch(-1)))), float(generator_loss(d(batch(-1))))
    for _ in range(150):
        loss = discriminator_loss(d(batch(1)), d(batch(-1)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end, g_end = float(discriminator_loss(d(batch(1)), d(batch(-1)))), float(generator_loss(d(batch(-1))))
    assert start > 1.2 and end < 0.4, (start, end)  # chance is 2 log 2 = 1.39
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
