"""Feature-caching accumulation (train/accum.py): the accumulated gradient over k
chunks equals the gradient of the loss on the full batch in one pass (which
naive gradient accumulation does not), alone, under DDP with 2 gloo processes,
and on a real (tiny) open_clip model."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from train.accum import accumulate_step, model_outputs, split_chunks
from train.loss import LOGIT_SCALE_INIT, make_loss

IMG_DIM, TXT_DIM, EMBED = 6, 5, 4


class ToyCLIP(nn.Module):
    """Image/text towers and a log-parameterised temperature; forward mimics
    open_clip's CLIP (normalised features, exponentiated scale)."""

    def __init__(self, output_dict: bool = True, dropout: float = 0.0, dtype=torch.float64) -> None:
        super().__init__()
        self.output_dict = output_dict
        self.visual = nn.Sequential(
            nn.Linear(IMG_DIM, 8, dtype=dtype), nn.Tanh(), nn.Dropout(dropout), nn.Linear(8, EMBED, dtype=dtype)
        )
        self.text = nn.Sequential(nn.Linear(TXT_DIM, 8, dtype=dtype), nn.Tanh(), nn.Linear(8, EMBED, dtype=dtype))
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT, dtype=dtype))

    def forward(self, image, text):
        img = F.normalize(self.visual(image), dim=-1)
        txt = F.normalize(self.text(text), dim=-1)
        if self.output_dict:
            return {"image_features": img, "text_features": txt, "logit_scale": self.logit_scale.exp()}
        return img, txt, self.logit_scale.exp()


def batch(n: int, seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, IMG_DIM, generator=g, dtype=dtype), torch.randn(n, TXT_DIM, generator=g, dtype=dtype)


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def full_batch(model, images, texts, loss_fn=None):
    """The reference: one forward/backward over the whole batch."""
    model.zero_grad(set_to_none=True)
    out = model_outputs(model(images, texts))
    loss = (loss_fn or make_loss(0, 1))(**out)
    loss.backward()
    return loss.item(), grads(model)


def assert_grads_close(got, ref, rtol=1e-10, atol=1e-12):
    assert set(got) == set(ref)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=rtol, atol=atol, msg=name)


def differs(got, ref, name, rel=1e-3):
    return (got[name] - ref[name]).norm() > rel * ref[name].norm()


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("output_dict", [True, False])
def test_accumulated_gradient_equals_full_batch(k, output_dict):
    torch.manual_seed(0)
    model = ToyCLIP(output_dict=output_dict)
    images, texts = batch(2 * k)  # k chunks of 2
    ref_loss, ref = full_batch(model, images, texts)
    assert ref["logit_scale"].abs() > 1e-6  # the temperature gradient is really tested

    model.zero_grad(set_to_none=True)
    loss, stats = accumulate_step(model, images, texts, make_loss(0, 1), accum_freq=k)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert stats["accum_freq"] == k and stats["local_batch"] == images.shape[0]
    assert stats["logit_scale"] == pytest.approx(1 / 0.07)
    assert_grads_close(grads(model), ref)


def test_chunk_lists_and_accumulation_into_existing_grads():
    torch.manual_seed(0)
    model = ToyCLIP()
    images, texts = batch(6)
    _, ref = full_batch(model, images, texts)
    model.zero_grad(set_to_none=True)
    accumulate_step(model, list(images.split(2)), list(texts.split(2)), make_loss(0, 1), accum_freq=None)
    assert_grads_close(grads(model), ref)
    # It accumulates (like .backward()): a second call doubles the gradient.
    accumulate_step(model, images, texts, make_loss(0, 1), accum_freq=3)
    assert_grads_close(grads(model), {n: 2 * g for n, g in ref.items()})


def test_naive_accumulation_gives_a_different_gradient():
    """Loss per chunk (negatives only within the chunk), gradients summed: not
    the full-batch gradient. accum.py doing this would fail the tests above."""
    torch.manual_seed(0)
    model = ToyCLIP()
    images, texts = batch(8)
    _, ref = full_batch(model, images, texts)
    k = 4
    model.zero_grad(set_to_none=True)
    for img, txt in zip(images.split(2), texts.split(2)):
        out = model(img, txt)
        (make_loss(0, 1)(**out) / k).backward()
    naive = grads(model)
    for name in ("visual.0.weight", "text.0.weight", "logit_scale"):
        assert differs(naive, ref, name), name


def test_logit_scale_counted_once():
    """Counting the temperature's gradient in every re-forward (as a plain
    open_clip_train loop does) would give k times the full-batch value."""
    torch.manual_seed(0)
    model = ToyCLIP()
    images, texts = batch(8)
    _, ref = full_batch(model, images, texts)
    model.zero_grad(set_to_none=True)
    accumulate_step(model, images, texts, make_loss(0, 1), accum_freq=4)
    got = model.logit_scale.grad
    torch.testing.assert_close(got, ref["logit_scale"], rtol=1e-10, atol=0)
    assert not torch.allclose(got, 4 * ref["logit_scale"])


def test_dropout_masks_replayed():
    """With dropout, the no-grad pass and the re-forward must draw the same masks.
    Reference: the same chunk forwards, all with grad, concatenated, one backward."""
    torch.manual_seed(0)
    model = ToyCLIP(dropout=0.5)
    images, texts = batch(6)
    k = 3
    torch.manual_seed(123)
    model.zero_grad(set_to_none=True)
    outs = [model(i, t) for i, t in zip(images.split(2), texts.split(2))]
    loss = make_loss(0, 1)(
        torch.cat([o["image_features"] for o in outs]),
        torch.cat([o["text_features"] for o in outs]),
        outs[-1]["logit_scale"],
    )
    loss.backward()
    ref = grads(model)

    torch.manual_seed(123)
    model.zero_grad(set_to_none=True)
    got_loss, _ = accumulate_step(model, images, texts, make_loss(0, 1), accum_freq=k)
    assert got_loss == pytest.approx(loss.item(), rel=1e-12)
    assert_grads_close(grads(model), ref)

    torch.manual_seed(123)
    model.zero_grad(set_to_none=True)
    accumulate_step(model, images, texts, make_loss(0, 1), accum_freq=k, replay_rng=False)
    assert differs(grads(model), ref, "visual.0.weight")


def test_autocast_and_backward_hooks():
    torch.manual_seed(0)
    model = ToyCLIP(dtype=torch.float32)
    images, texts = batch(8, dtype=torch.float32)
    entered = []

    def bf16():
        entered.append(1)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    ref_loss, ref = full_batch(model, images, texts)
    model.zero_grad(set_to_none=True)
    scaled = []
    loss, _ = accumulate_step(
        model,
        images,
        texts,
        make_loss(0, 1),
        accum_freq=2,
        autocast=bf16,
        backward=lambda loss: (scaled.append(loss.dtype), (loss * 8).backward()),
    )
    assert len(entered) == 4  # 2 no-grad forwards + 2 re-forwards
    assert len(scaled) == 2
    assert loss == pytest.approx(ref_loss, rel=5e-2)
    for name, g in ref.items():  # bf16 forwards: loose, and the x8 "scaler" is visible
        torch.testing.assert_close(model.get_parameter(name).grad / 8, g, rtol=0.1, atol=0.05 * g.abs().max().item())


def test_split_chunks_validation():
    x = torch.zeros(6, 2)
    assert [c.shape[0] for c in split_chunks(x, 3)] == [2, 2, 2]
    with pytest.raises(ValueError):
        split_chunks(x, 4)
    with pytest.raises(ValueError):
        split_chunks([x, x], 3)
    with pytest.raises(TypeError):
        model_outputs(torch.zeros(2))


def test_real_open_clip_tiny_vit(tmp_path):
    import open_clip

    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    (tmp_path / "wit-test-tiny-vit.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "wit-test-tiny-vit.json")
    torch.manual_seed(0)
    model = open_clip.create_model("wit-test-tiny-vit", output_dict=True).double().train()
    assert model.logit_scale.item() == pytest.approx(LOGIT_SCALE_INIT)
    g = torch.Generator().manual_seed(2)
    images = torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64)
    texts = torch.randint(1, 49408, (4, 16), generator=g)

    ref_loss, ref = full_batch(model, images, texts)
    model.zero_grad(set_to_none=True)
    loss, _ = accumulate_step(model, images, texts, make_loss(0, 1), accum_freq=2)
    assert loss == pytest.approx(ref_loss, rel=1e-10)
    got = grads(model)
    assert set(got) == set(ref) and len(ref) > 20
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-7, atol=1e-10, msg=name)


WORLD, LOCAL_CHUNK, K = 2, 2, 2  # global contrastive batch 2 * 2 * 2 = 8


def _ddp_worker(rank, init_file, out_dir, state, images, texts):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=120)
    )
    try:
        model = ToyCLIP()
        model.load_state_dict(state)
        ddp = DDP(model)
        n = K * LOCAL_CHUNK
        local = slice(rank * n, (rank + 1) * n)
        loss, stats = accumulate_step(ddp, images[local], texts[local], make_loss(rank, WORLD), accum_freq=K)
        torch.save(
            {
                "loss": torch.tensor(loss, dtype=torch.float64),
                "local_batch": torch.tensor(stats["local_batch"]),
                "grads": grads(model),
            },
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_accum_equals_full_batch(tmp_path):
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    model = ToyCLIP()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    images, texts = batch(WORLD * K * LOCAL_CHUNK)
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path), state, images, texts), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    ref_loss, ref = full_batch(model, images, texts)

    assert all(r["local_batch"].item() == K * LOCAL_CHUNK for r in ranks)
    mean_loss = sum(r["loss"].item() for r in ranks) / WORLD
    assert mean_loss == pytest.approx(ref_loss, rel=1e-10)
    for r in ranks:  # DDP-averaged: identical on both ranks, and equal to one process on all 8
        assert_grads_close(r["grads"], ref)
