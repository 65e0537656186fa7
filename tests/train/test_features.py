"""`train.features`: a ViT's probe features are the tower's output before the projection, the
embedding is `encode_image`'s, and the cache key follows the weights, alike for the
trainer's model in memory and the checkpoint it saved."""

from __future__ import annotations


def test_probe_features_are_the_vit_features_before_the_projection():
    import torch

    from train import features
    from train import model as models

    torch.manual_seed(0)
    net, _, size = models.create("tiny-ViT-64")
    net.eval()
    images = torch.randn(6, 3, size, size)
    feats = features.encode(net, [(images[:4], torch.arange(4)), (images[4:], torch.arange(2))])
    width = net.visual.proj.shape[0]
    assert feats.probe.shape == (6, width) and feats.embedding.shape == (6, net.visual.proj.shape[1])
    assert width != feats.embedding.shape[1], "tiny-ViT-64's width differs from its embedding size"
    with torch.no_grad():
        reference = torch.nn.functional.normalize(net.encode_image(images), dim=-1)
        assert torch.allclose(feats.embedding, reference, atol=1e-5), "the embedding is encode_image's"
        assert torch.allclose(feats.probe @ net.visual.proj, net.visual(images), atol=1e-5)
    assert feats.kind == features.PRE_PROJECTION and net.visual.proj is not None, "the projection is put back"
    assert feats.labels.tolist() == [0, 1, 2, 3, 0, 1]


def test_feature_cache_key_follows_the_weights_and_survives_a_checkpoint(tmp_path):
    """The trainer's in-memory model and the checkpoint it saved hash alike; other weights do not."""
    import torch

    from train import checkpoint, features
    from train import model as models
    from train.sources import load_checkpoint

    torch.manual_seed(0)
    net, _, _ = models.create("tiny-ViT-64")
    checkpoint.save(
        tmp_path / "checkpoints", 2, {"model": net.state_dict(), "step": 2, "config": {"model": "tiny-ViT-64"}}
    )
    loaded, _, _, _ = load_checkpoint(tmp_path)
    digest = features.weights_digest(net)
    assert features.weights_digest(loaded) == digest
    with torch.no_grad():
        loaded.logit_scale.add_(1e-3)
    assert features.weights_digest(loaded) != digest
