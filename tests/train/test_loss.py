"""The contrastive loss (train/loss.py): value, temperature clamp, and the
sharded version under 2 gloo processes equal to one process on the whole batch."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from train.loss import LOGIT_SCALE_INIT, LOGIT_SCALE_MAX, clamp_logit_scale_, make_loss

WORLD = 2
LOCAL = 3  # samples per rank


def reference_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy, written out with log-softmax (CLIP figure 3)."""
    logits = scale * img @ txt.T
    n = logits.shape[0]
    idx = torch.arange(n)
    loss_i = -logits.log_softmax(dim=1)[idx, idx].mean()
    loss_t = -logits.T.log_softmax(dim=1)[idx, idx].mean()
    return (loss_i + loss_t) / 2


class Encoder(nn.Module):
    """Tiny shared 'encoder': one linear projection per modality + learnable temperature."""

    def __init__(self) -> None:
        super().__init__()
        self.img = nn.Linear(6, 4, dtype=torch.float64)
        self.txt = nn.Linear(5, 4, dtype=torch.float64)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT, dtype=torch.float64))

    def forward(self, x_img, x_txt):
        return (F.normalize(self.img(x_img), dim=-1), F.normalize(self.txt(x_txt), dim=-1), self.logit_scale.exp())


def test_constants():
    assert LOGIT_SCALE_INIT == pytest.approx(math.log(1 / 0.07))
    assert math.exp(LOGIT_SCALE_INIT) == pytest.approx(1 / 0.07)
    assert LOGIT_SCALE_MAX == pytest.approx(math.log(100))


@pytest.mark.parametrize("scale", [1 / 0.07, 100.0, 1.0])
def test_identity_features_closed_form(scale):
    # I = T = the n unit vectors: logits = s * eye(n), so each row's CE is
    # log(e^s + n - 1) - s = log(1 + (n - 1) e^-s), in both directions.
    n = 4
    eye = torch.eye(n, dtype=torch.float64)
    got = make_loss(0, 1)(eye, eye, torch.tensor(scale, dtype=torch.float64))
    expected = math.log1p((n - 1) * math.exp(-scale))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    if scale >= 1 / 0.07:
        assert got.item() < 1e-5  # matched pairs, confident temperature: near-zero loss


def test_random_features_match_formula():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=-1)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    loss = make_loss(0, 1)
    torch.testing.assert_close(loss(img, txt, scale), reference_loss(img, txt, scale), rtol=1e-12, atol=0)
    # Not symmetric in its arguments by accident: swapping the pairing changes it.
    assert not torch.allclose(loss(img, txt.flip(0), scale), loss(img, txt, scale))


def test_make_loss_config():
    single = make_loss(0, 1)
    assert single.world_size == 1
    sharded = make_loss(1, 2)
    assert (sharded.local_loss, sharded.gather_with_grad, sharded.rank, sharded.world_size) == (True, True, 1, 2)
    with pytest.raises(ValueError):
        make_loss(2, 2)


def test_clamp_logit_scale():
    enc = Encoder()
    assert enc.logit_scale.item() == pytest.approx(LOGIT_SCALE_INIT)
    clamp_logit_scale_(enc)  # in range: untouched
    assert enc.logit_scale.item() == pytest.approx(LOGIT_SCALE_INIT)
    with torch.no_grad():
        enc.logit_scale.fill_(7.0)
    clamp_logit_scale_(enc)
    assert enc.logit_scale.item() == pytest.approx(math.log(100))
    assert enc.logit_scale.exp().item() == pytest.approx(100.0)
    with torch.no_grad():
        enc.logit_scale.fill_(-1.0)
    clamp_logit_scale_(enc)
    assert enc.logit_scale.item() == 0.0
    assert enc.logit_scale.requires_grad  # still a parameter

    class Wrapped(nn.Module):  # DDP-style wrapper: the real model is .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    with torch.no_grad():
        enc.logit_scale.fill_(9.0)
    clamp_logit_scale_(Wrapped(enc))
    assert enc.logit_scale.item() == pytest.approx(math.log(100))


def _data():
    g = torch.Generator().manual_seed(1)
    n = WORLD * LOCAL
    return (torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randn(n, 5, generator=g, dtype=torch.float64))


def _sharded_worker(rank, init_file, out_dir, state, x_img, x_txt):
    import torch.distributed as dist
    from open_clip.loss import ClipLoss

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=120)
    )
    try:
        local = slice(rank * LOCAL, (rank + 1) * LOCAL)
        results = {}
        # The real one, and (to show the gather's gradient is what makes it work)
        # the same sharded loss with the gathered features detached.
        for name, loss_fn in (
            ("sharded", make_loss(rank, WORLD)),
            ("no_grad_gather", ClipLoss(local_loss=True, gather_with_grad=False, rank=rank, world_size=WORLD)),
        ):
            enc = Encoder()
            enc.load_state_dict(state)
            img, txt, scale = enc(x_img[local], x_txt[local])
            loss = loss_fn(img, txt, scale)
            loss.backward()
            grads = {}
            for pname, p in enc.named_parameters():  # what DDP does: average over ranks
                g = p.grad.clone()
                dist.all_reduce(g)
                grads[pname] = g / WORLD
            results[name] = {"loss": loss.detach(), "grads": grads}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _full_batch(state, x_img, x_txt):
    enc = Encoder()
    enc.load_state_dict(state)
    img, txt, scale = enc(x_img, x_txt)
    loss = make_loss(0, 1)(img, txt, scale)
    loss.backward()
    ref = reference_loss(img.detach(), txt.detach(), scale.detach())
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-12, atol=0)
    return loss.detach(), {n: p.grad.clone() for n, p in enc.named_parameters()}


@pytest.mark.slow
def test_sharded_two_processes_equal_full_batch(tmp_path):
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    state = Encoder().state_dict()
    x_img, x_txt = _data()
    mp.spawn(
        _sharded_worker, args=(str(tmp_path / "init"), str(tmp_path), state, x_img, x_txt), nprocs=WORLD, join=True
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    ref_loss, ref_grads = _full_batch(state, x_img, x_txt)

    # Each rank's loss is the mean over its own rows; their mean is the full-batch loss.
    per_rank = torch.stack([r["sharded"]["loss"] for r in ranks])
    assert not torch.allclose(per_rank[0], per_rank[1])
    torch.testing.assert_close(per_rank.mean(), ref_loss, rtol=1e-10, atol=0)
    # DDP-averaged gradients equal the single-process gradients, logit_scale included.
    assert set(ref_grads) == {"img.weight", "img.bias", "txt.weight", "txt.bias", "logit_scale"}
    for name, ref in ref_grads.items():
        assert ref.abs().max() > 1e-6, name
        for r in ranks:
            torch.testing.assert_close(r["sharded"]["grads"][name], ref, rtol=1e-10, atol=1e-12)
    # Without gradient through the gather, the loss value is the same but the
    # encoder gradients are not: the other ranks' terms are lost.
    no_grad = torch.stack([r["no_grad_gather"]["loss"] for r in ranks]).mean()
    torch.testing.assert_close(no_grad, ref_loss, rtol=1e-10, atol=0)
    assert not torch.allclose(
        ranks[0]["no_grad_gather"]["grads"]["img.weight"], ref_grads["img.weight"], rtol=1e-3, atol=0
    )
