"""`python -m train.export`: the shared trained run's model as an open_clip model folder, loaded by
open_clip's own `local-dir:` loader with nothing registered, giving the very features our
evaluation computes; its model card; bad input as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained_run) -> dict:
    """The shared trained run (tests/support/trained_run.py), exported from its folder."""
    tmp = tmp_path_factory.mktemp("export")
    out = tmp / "model"
    res = subprocess.run(
        [sys.executable, "-m", "train.export", str(trained_run.run), "--out", str(out)],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return {
        "run": trained_run.run,
        "out": out,
        "folder": trained_run.imagefolder,
        "printed": json.loads(res.stdout),
        "tmp": tmp,
    }


def test_open_clip_loads_the_folder_with_our_features(exported, monkeypatch):
    import open_clip
    from open_clip import factory

    from train.sources import load_checkpoint

    out, run = exported["out"], exported["run"]
    assert exported["printed"]["checkpoint"] == str(run / "checkpoints" / "step-00000003.pt"), "the newest"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "open_clip_config.json",
        "open_clip_model.safetensors",
    ]
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["model_cfg"] == json.loads((ROOT / "train" / "model_configs" / "tiny-ViT-64.json").read_text())
    assert config["preprocess_cfg"]["interpolation"] == "bicubic"

    monkeypatch.delitem(factory._MODEL_CONFIGS, "tiny-ViT-64", raising=False)  # as in a fresh process
    assert open_clip.get_model_config("tiny-ViT-64") is None
    theirs, _, their_preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    their_tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    ours, our_tokenizer, our_preprocess, meta = load_checkpoint(run)  # the evaluation's loader
    assert meta["step"] == 3
    theirs.eval()

    image = Image.open(next(exported["folder"].glob("cat/*.png")))
    texts = ["a photo of a cat.", "a drawing of a dog."]
    x, tokens = their_preprocess(image)[None], their_tokenizer(texts)
    assert torch.equal(x, our_preprocess(image)[None]) and torch.equal(tokens, our_tokenizer(texts))
    with torch.no_grad():
        assert torch.equal(theirs.encode_image(x), ours.encode_image(x))
        assert torch.equal(theirs.encode_text(tokens), ours.encode_text(tokens))
        assert torch.equal(theirs.logit_scale, ours.logit_scale)
    state = torch.load(run / "checkpoints" / "step-00000003.pt", map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(v, state[k]) for k, v in theirs.state_dict().items()), "the trained weights, unchanged"


def test_model_card_names_data_recipe_steps_and_results(exported):
    card = (exported["out"] / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: open_clip\n" in card and "license: other\n" in card
    assert "tiny-ViT-64" in card and "00000.tar" in card
    assert "Steps: 3 of 3 (checkpoint step-00000003.pt)" in card and "Samples seen: 12" in card
    assert "peak lr 0.001 after 1 warm-up steps" in card
    result = json.loads((exported["run"] / "eval" / "step-00000003.json").read_text())
    top1 = result["datasets"][f"imagefolder:{exported['folder']}"]["top1"]
    assert f"(6 images, 2 classes): top-1 {top1:.4f} (chance 0.5000)" in card
    assert "retrieval on val" in card and 'create_model_and_transforms("local-dir:PATH")' in card


def test_evaluate_reads_the_folder_as_it_reads_the_run(exported, capsys):
    from train.evaluate import main

    common = ["--datasets", f"imagefolder:{exported['folder']}", "--retrieval", "--templates", "simple"]
    assert main(["--model", f"local-dir:{exported['out']}", "--out", str(exported["tmp"] / "a"), *common]) == 0
    assert main(["--checkpoint", str(exported["run"]), "--out", str(exported["tmp"] / "b"), *common]) == 0
    a, b = (json.loads((exported["tmp"] / x / "eval" / "final.json").read_text()) for x in "ab")
    assert a["model"] == f"local-dir:{exported['out']}" and b["checkpoint_step"] == 3
    assert a["datasets"] == {k: {**v, "seconds": a["datasets"][k]["seconds"]} for k, v in b["datasets"].items()}


def test_bad_sources_are_one_line_errors(exported, tmp_path, capsys):
    from train.export import main

    empty = tmp_path / "runs" / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    foreign = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "x", "state_dict": {"w": torch.zeros(2)}}, foreign)
    (tmp_path / "file").write_text("")
    for source, out, needle in [
        (tmp_path / "missing.pt", tmp_path / "o", "checkpoint not found"),
        (empty, tmp_path / "o", "no checkpoint in it"),
        (foreign, tmp_path / "o", "not a checkpoint of this trainer"),
        (exported["run"], tmp_path / "file", "a file, not a folder"),
    ]:
        assert main([str(source), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and needle in err, err


def test_the_card_reads_the_steps_evaluation_under_either_file_name(tmp_path):
    from train.export import _eval_at

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    assert _eval_at(run, 3) is None and _eval_at(None, 3) is None
    (run / "eval" / "final.json").write_text(json.dumps({"checkpoint_step": 3, "from": "final"}))
    assert _eval_at(run, 3)["from"] == "final" and _eval_at(run, 4) is None, "final.json only for its own step"
    (run / "eval" / "step-0000003.json").write_text(json.dumps({"from": "7 digits"}))
    assert _eval_at(run, 3)["from"] == "7 digits"
    (run / "eval" / "step-00000003.json").write_text(json.dumps({"from": "8 digits"}))
    assert _eval_at(run, 3)["from"] == "8 digits"
