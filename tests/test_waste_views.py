"""Cached views of the frozen layers (`edgekit.trainer.waste_views`): the tail on stored activations is the
whole model, stores are reused only for the same inputs, and training data draws from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.trainer import waste, waste_data, waste_views
from edgekit.trainer.augment import AugmentConfig


@pytest.fixture
def small(waste_mini: Path, imagenet_weights: Path, tmp_path: Path):
    data = tmp_path / "data"
    for c in ("glass", "paper"):
        (data / c).mkdir(parents=True)
        for p in sorted((waste_mini / c).glob("*.jpg"))[:6]:
            (data / c / p.name).symlink_to(p)
    cfg = waste.WasteConfig(data=data, weights=str(imagenet_weights), img_size=64, device="cpu",
                            cache_dir=tmp_path / "cache", val_split=0.34)
    prep = waste_data.prepare(cfg)
    model, style, _ = waste.build_model(cfg, 2)
    waste.set_trainable(model, 20)
    return cfg, prep, model.train(), style.preprocess(64)  # train mode, as the trainer hands it over


def test_tail_on_stored_plain_views_matches_the_whole_model(small) -> None:
    cfg, prep, model, pre = small
    cut = waste_views.first_trainable_block(model)
    assert 0 < cut < len(model.features)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    views = waste_views.build(prep, model, cut, pre, cfg.augment, 3, seed=1, device=torch.device("cpu"),
                              root=cfg.cache_dir)
    for k, v in model.state_dict().items():  # BatchNorm statistics untouched by the frozen passes
        assert torch.equal(v, before[k]), k
    assert views.plain.shape[0] == len(prep.y) and views.plain.dtype == np.float16
    assert views.augmented.shape[:2] == (3, len(prep.split.train))
    tail = waste_views.Tail(model, cut)
    assert tail.state_dict().keys() == model.state_dict().keys()
    every = np.arange(len(prep.y))
    full = waste_data.predict(model, prep, every, pre, torch.device("cpu"))
    via_views = waste_views.predict_tail(tail, views, every, torch.device("cpu"))
    np.testing.assert_allclose(via_views.numpy(), full.numpy(), atol=0.05)  # float16 storage
    assert not np.allclose(views.augmented[0], views.plain[prep.split.train])


def test_store_is_reused_only_for_the_same_inputs(small, monkeypatch) -> None:
    cfg, prep, model, pre = small
    cut = waste_views.first_trainable_block(model)
    cpu = torch.device("cpu")
    fills: list[int] = []
    real_fill = waste_views._fill
    monkeypatch.setattr(waste_views, "_fill", lambda *a, **k: (fills.append(1), real_fill(*a, **k))[1])
    a = waste_views.build(prep, model, cut, pre, cfg.augment, 2, 1, cpu, root=cfg.cache_dir)
    b = waste_views.build(prep, model, cut, pre, cfg.augment, 2, 1, cpu, root=cfg.cache_dir)
    assert len(fills) == 1
    np.testing.assert_array_equal(a.augmented, b.augmented)
    waste_views.build(prep, model, cut, pre, AugmentConfig(rotation=0), 2, 1, cpu, root=cfg.cache_dir)
    waste_views.build(prep, model, cut, pre, cfg.augment, 2, 2, cpu, root=cfg.cache_dir)
    with torch.no_grad():
        model.features[cut - 1].conv[0][0].weight.mul_(1.01)  # other frozen weights: a new store
    waste_views.build(prep, model, cut, pre, cfg.augment, 2, 1, cpu, root=cfg.cache_dir)
    assert len(fills) == 4
    stores = [p for p in (cfg.cache_dir / f"views-v{waste_views.VERSION}").iterdir()]
    assert len(stores) == waste_views.KEEP and not [p for p in stores if p.name.startswith(".")]


def test_batches_draw_plain_and_augmented_views_with_labels(small) -> None:
    cfg, prep, model, pre = small
    cut = waste_views.first_trainable_block(model)
    views = waste_views.build(prep, model, cut, pre, cfg.augment, 2, 1, torch.device("cpu"), root=cfg.cache_dir)
    data = waste_views.ViewBatches(views, prep, balanced=False)
    assert len(data) == len(prep.split.train)
    torch.manual_seed(0)
    idx = np.arange(len(data))
    seen = set()
    for _ in range(20):
        x, y = data.batch(idx, torch.device("cpu"))
        assert x.shape == (len(idx), *views.plain.shape[1:]) and x.dtype == torch.float32
        assert y.tolist() == prep.y[prep.split.train].tolist()
        first = x[0].numpy().astype(np.float16)
        seen |= {v for v, ref in enumerate([views.plain[prep.split.train[0]], *views.augmented[:, 0]])
                 if np.array_equal(first, ref)}
    assert seen == {0, 1, 2}


def test_views_are_capped_by_the_store_budget(small) -> None:
    _, _, model, _ = small
    cut = waste_views.first_trainable_block(model)
    per_photo = 2 * int(np.prod(model.eval().features[:cut](torch.zeros(1, 3, 64, 64)).shape[1:]))
    model.train()
    assert waste_views.fit_views(model, cut, 64, 100, 80, 16, max_bytes=1 << 40) == 16
    assert waste_views.fit_views(model, cut, 64, 100, 80, 16, max_bytes=(100 + 80 * 5) * per_photo) == 5
    assert waste_views.fit_views(model, cut, 64, 100, 80, 16, max_bytes=50 * per_photo) == 0
    assert model.training


def test_training_on_cached_views_writes_a_bundle_that_scores_as_stored(small, tmp_path: Path) -> None:
    import json

    from edgekit.trainer.models import load_from_bundle

    cfg, prep, _, pre = small
    cfg = cfg.model_copy(update={"views": 3, "epochs": 3, "unfreeze": 20, "batch_size": 4,
                                 "run_dir": tmp_path / "run", "output": "viewed"})
    bundle = waste.train(cfg)
    bundle.verify()
    assert len(list((cfg.cache_dir / f"views-v{waste_views.VERSION}").iterdir())) == 1
    history = json.loads((bundle.path / "history.json").read_text())
    assert [h["phase"] for h in history] == [1, 2, 2]
    model = load_from_bundle(bundle)  # the full network, run on photos: the manifest's number comes back
    logits = waste_data.predict(model, prep, prep.split.val, pre, torch.device("cpu"))
    acc = float((logits.argmax(1).numpy() == prep.y[prep.split.val]).mean())
    assert acc == pytest.approx(bundle.manifest.metrics["val_accuracy"])
