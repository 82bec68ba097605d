import json

import numpy as np
import pytest
import torch
from eval_helpers import make_melset, run_script

from evaluation.classifier import (
    IGNORE,
    ClassifierConfig,
    MelClassifier,
    evaluate_accuracy,
    labels_of,
    load_classifier,
    train_classifier,
)
from evaluation.mels import load_melset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_labels_map_ranges_and_missing():
    lab = labels_of([{"pitch": 21, "instrument_family": 10, "instrument_source": 2},
                     {"pitch": 108}, {"pitch": 12, "instrument_family": 11}])
    assert lab["pitch"].tolist() == [0, 87, IGNORE]
    assert lab["family"].tolist() == [10, IGNORE, IGNORE]
    assert lab["source"].tolist() == [2, IGNORE, IGNORE]


def test_learns_separable_toy_set_above_chance(tmp_path):
    root = make_melset(tmp_path / "mels")
    train, test = load_melset(root, "train"), load_melset(root, "test")
    torch.manual_seed(0)
    untrained = MelClassifier(ClassifierConfig(channels=8))
    base = evaluate_accuracy(untrained, test.mels, test.labels, test.config)
    model = train_classifier(train.mels, train.labels, train.config, ClassifierConfig(channels=8),
                             max_steps=35, batch_size=16)
    acc = evaluate_accuracy(model, test.mels, test.labels, test.config)
    # 3 pitches and 2 families: chance is 1/3 and 1/2.
    assert acc["pitch"] >= 0.9 and acc["family"] >= 0.75
    assert acc["pitch"] > base["pitch"]


def test_script_saves_loadable_weights(tmp_path, capsys):
    root = make_melset(tmp_path / "mels", {"train": 12, "valid": 6})
    out = tmp_path / "clf"
    assert run_script("train_classifier", ["--data_dir", root, "--out", out, "--max_steps", "3", "--channels", "8"]) == 0
    assert "valid accuracy" in capsys.readouterr().out
    acc = json.loads((out / "accuracies.json").read_text())
    assert set(acc) == {"train", "valid"} and 0.0 <= acc["valid"]["pitch"] <= 1.0
    torch.load(out / "classifier.pt", weights_only=True)
    model, cfg = load_classifier(out)
    assert model.cfg.channels == 8 and cfg.num_mels == 80
    x = np.zeros((2, 80, 64), np.float32)
    assert model(torch.from_numpy(x))["embedding"].shape == (2, 128)
    assert run_script("train_classifier", ["--data_dir", tmp_path / "none", "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "none" in err[0]
