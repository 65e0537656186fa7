"""Schedule, parameter groups, Adam settings by family, and checkpoint round trips."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from pipeline.errors import InputError
from train import checkpoint, optim
from train import model as models


def test_cosine_schedule_with_linear_warmup():
    lrs = [optim.cosine_lr(s, 1.0, warmup=10, total=110) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[4] == pytest.approx(0.5) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.5)  # half-way through the cosine
    assert lrs[109] == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])), "monotone decay after warm-up"
    assert optim.cosine_lr(200, 1.0, 10, 110, min_lr=0.01) == pytest.approx(0.01)


@pytest.mark.parametrize("name", ["tiny-ViT-64", "tiny-RN-64"])
def test_no_decay_on_gains_biases_embeddings_and_logit_scale(name):
    net, _, _ = models.create(name)
    groups = {g["name"]: g for g in optim.param_groups(net, 0.2)}
    ids = {n: id(p) for n, p in net.named_parameters()}
    decay = {id(p) for p in groups["decay"]["params"]}
    rest = {id(p) for p in groups["no_decay"]["params"]}
    assert groups["decay"]["weight_decay"] == 0.2 and groups["no_decay"]["weight_decay"] == 0.0
    assert decay.isdisjoint(rest) and len(decay) + len(rest) == len(ids)
    for n, p in net.named_parameters():
        expect_no_decay = p.ndim < 2 or "embedding" in n or n == "logit_scale"
        assert (ids[n] in rest) == expect_no_decay, n
    for must in ("logit_scale", "token_embedding.weight", "positional_embedding"):
        assert ids[must] in rest
    assert any(n.endswith(".bias") for n in ids) and all(ids[n] in rest for n in ids if n.endswith(".bias"))
    assert ids["text_projection"] in decay


def test_adam_settings_follow_clip_by_family():
    _, vit = models.resolve("tiny-ViT-64")
    _, rn = models.resolve("tiny-RN-64")
    assert optim.default_betas_eps("tiny-ViT-64", vit) == ((0.9, 0.98), 1e-6)
    assert optim.default_betas_eps("tiny-RN-64", rn) == ((0.9, 0.999), 1e-8)
    assert optim.default_betas_eps("RN50", models.resolve("RN50")[1]) == ((0.9, 0.999), 1e-8)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(InputError, match="--model: unknown model 'no-such-net'"):
        models.resolve("no-such-net")


def test_checkpoint_roundtrip_is_weights_only_and_restores_rng(tmp_path):
    net, _, _ = models.create("tiny-ViT-64")
    opt = optim.make_optimizer(net, 1e-3, 0.2, (0.9, 0.98), 1e-6)
    net(torch.randn(2, 3, 64, 64), torch.zeros(2, 32, dtype=torch.long))[0].sum().backward()
    opt.step()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "step": 7, "rng": [checkpoint.rng_state()]}
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    for step in (5, 7, 9):
        checkpoint.save(tmp_path, step, {**state, "step": step}, keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-00000007.pt", "step-00000009.pt"]
    loaded = checkpoint.load(checkpoint.latest(tmp_path))  # torch.load(weights_only=True) inside
    assert loaded["step"] == 9
    net2, _, _ = models.create("tiny-ViT-64")
    net2.load_state_dict(loaded["model"])
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values()))
    checkpoint.set_rng_state(loaded["rng"][0])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    assert not list(tmp_path.glob(".*tmp*")), "no temporary files left behind"


def test_any_open_clip_architecture_by_name_rn50_with_attention_pooling():
    net, tokenizer, size = models.create("RN50")
    assert size == 224 and type(net.visual.attnpool).__name__ == "AttentionPool2d"
    with torch.no_grad():
        image, text, scale = net(torch.randn(1, 3, 224, 224), tokenizer(["a photo of a dog"]))[:3]
    assert image.shape == text.shape == (1, 1024)
    assert float(scale) == pytest.approx(1 / 0.07, rel=1e-4), "logit scale starts at ln(1/0.07)"
