"""Tests of gamer_mril.training: cache, augmentation, loss, sampler, training, metrics."""

import json
import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from gamer_mril import CONTRASTS
from gamer_mril import evalfigures as F
from gamer_mril import evaluation as E
from gamer_mril import training as T
from gamer_mril.training.loop import _batch_stream
from gamer_mril.training.selection import _trailing_mean

SMALL = (16, 16, 20)


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _no_aug(**kw):
    cfg = dict(noise_sd=0.0, max_rotation_deg=0.0, max_scale=0.0, p_flip=0.0, p_rot90=0.0)
    cfg.update(kw)
    return cfg


# ----------------------------------------------------------------------------- augmentation

def test_augment_same_draw_for_identical_channels():
    base = torch.rand((5, 1) + SMALL, generator=_gen(0))
    x = base.repeat(1, 3, 1, 1, 1)
    y = T.augment(x, _gen(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 0], y[:, 2])
    assert not torch.allclose(y, x, atol=0.05)      # something did happen


def test_augment_marker_lands_in_same_place_in_all_contrasts():
    gen = _gen(3)
    b = 6
    x = 0.1 * torch.rand((b, 3) + SMALL, generator=gen)   # different image per channel
    marker = (5, 10, 12)
    x[:, :, marker[0], marker[1], marker[2]] = 100.0
    y = T.augment(x, _gen(4), noise_sd=0.0)
    moved = 0
    for i in range(b):
        places = [np.unravel_index(int(torch.argmax(y[i, c])), SMALL) for c in range(3)]
        assert places[0] == places[1] == places[2]
        moved += places[0] != marker
    assert moved > 0


def test_augment_marker_follows_drawn_matrix_on_non_cubic_matrix():
    # The drawn matrix maps an output voxel's offset from the centre to the input
    # offset it samples (voxel units, axes D, H, W); the marker must land at M^-1 p.
    shape = (12, 16, 20)
    cfg = dict(noise_sd=0.0, max_rotation_deg=30.0, max_scale=0.1, p_flip=0.5, p_rot90=0.5)
    params = T.draw_augmentation(8, shape, _gen(5), **cfg)
    centre = (np.array(shape) - 1) / 2
    marker = np.array([4, 5, 13])
    x = torch.zeros((8, 3) + shape)
    x[:, :, marker[0], marker[1], marker[2]] = 1.0
    y = T.apply_augmentation(x, params)
    for i in range(8):
        expected = centre + np.linalg.solve(params["matrix"][i].numpy(), marker - centre)
        found = np.array(np.unravel_index(int(torch.argmax(y[i, 0])), shape))
        # the brightest output voxel samples a point within the marker's cell ...
        sampled = centre + params["matrix"][i].numpy() @ (found - centre)
        assert np.abs(sampled - marker).max() < 1, (i, found, expected)
        # ... and lies next to the exact image of the marker
        assert np.abs(found - expected).max() < 1, (i, found, expected)


def test_augment_draw_bounds():
    params = T.draw_augmentation(500, (16, 16, 20), _gen(6))
    m = params["matrix"].numpy()
    scale = params["scale"].numpy()
    assert (np.abs(params["angles_deg"].numpy()) <= 30).all()
    assert params["angles_deg"].abs().max() > 25
    assert (scale >= 0.9).all() and (scale <= 1.1).all() and scale.min() < 0.92
    rot = m / scale[:, None, None]
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-9)   # rigid x scale
    flip_rate = params["flip"].double().mean(0).numpy()
    assert np.allclose(flip_rate, 0.5, atol=0.08)
    k = params["rot90_k"].numpy()
    assert abs((k > 0).mean() - 0.5) < 0.08 and set(np.unique(k)) == {0, 1, 2, 3}
    # D != H: no 90-degree turns
    assert (T.draw_augmentation(50, (12, 16, 20), _gen(6))["rot90_k"] == 0).all()


def test_flips_are_exact():
    x = torch.rand((3, 3) + SMALL, generator=_gen(7))
    y = T.augment(x, _gen(8), **_no_aug(p_flip=1.0))
    assert torch.allclose(y, x.flip(2, 3, 4), atol=1e-5)


def test_rot90_in_first_two_axes():
    x = torch.rand((6, 3) + SMALL, generator=_gen(9))
    y = T.augment(x, _gen(10), **_no_aug(p_rot90=1.0))
    for i in range(6):
        hits = [k for k in (1, 2, 3)
                if torch.allclose(y[i], torch.rot90(x[i], k, dims=(1, 2)), atol=1e-5)]
        assert len(hits) == 1
    # unequal first two axes: the draw is ignored, the batch comes back unchanged
    x2 = torch.rand((2, 3, 12, 16, 20), generator=_gen(9))
    assert torch.equal(T.augment(x2, _gen(10), **_no_aug(p_rot90=1.0)), x2)


def test_augment_samples_differ_and_reproducible():
    x = torch.rand((1, 3) + SMALL, generator=_gen(11)).repeat(4, 1, 1, 1, 1)
    y = T.augment(x, _gen(12))
    for i in range(1, 4):
        assert not torch.allclose(y[0], y[i], atol=1e-3)
    assert torch.equal(y, T.augment(x, _gen(12)))
    assert not torch.allclose(y, T.augment(x, _gen(13)), atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_augment_keeps_shape_and_dtype(dtype):
    x = torch.rand((2, 3, 12, 16, 20), generator=_gen(14)).to(dtype)
    y = T.augment(x, _gen(15))
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device


def test_noise_sd_on_constant_image():
    x = torch.full((4, 3, 32, 32, 40), 0.5)
    y = T.augment(x, _gen(16), **_no_aug(noise_sd=0.2))
    d = y - 0.5
    assert abs(float(d.std()) - 0.2) < 0.003
    assert abs(float(d.mean())) < 0.003
    assert torch.equal(d[:, 0], d[:, 2])             # one noise field per sample
    assert not torch.allclose(d[0], d[1])


# ----------------------------------------------------------------------------- loss, sampler

def test_sample_weights_hand_values():
    w = T.sample_weights(np.array([5.0, 0.0, 10.0, 2.5, 7.5, 6.0]))
    assert np.allclose(w, [2.0, 1.0, 1.0, 1.5, 1.5, 1.8])
    assert T.sample_weights(5) == 2
    assert torch.allclose(T.sample_weights(torch.tensor([0.0, 5.0])), torch.tensor([1.0, 2.0]))


def test_weighted_bce_by_hand():
    logit = torch.tensor([2.0, -1.0, 0.5])
    label = torch.tensor([1.0, 0.0, 0.0])
    edss = torch.tensor([6.0, 1.0, 5.0])
    p = [1 / (1 + math.exp(-v)) for v in (2.0, -1.0, 0.5)]
    bce = [-math.log(p[0]), -math.log(1 - p[1]), -math.log(1 - p[2])]
    w = [1.8, 1.2, 2.0]
    expected = sum(b * wi for b, wi in zip(bce, w)) / 3
    assert float(T.weighted_bce(logit, label, edss)) == pytest.approx(expected, rel=1e-6)


def test_sampler_balances_classes():
    labels = np.array([0] * 90 + [1] * 10)
    sampler = T.balanced_sampler(labels, _gen(17), num_samples=20000)
    drawn = labels[np.array(list(sampler))]
    assert abs(drawn.mean() - 0.5) < 0.02
    again = np.array(list(T.balanced_sampler(labels, _gen(17), num_samples=20000)))
    assert np.array_equal(labels[again], drawn)
    assert np.allclose(T.class_balance_weights([0, 0, 0, 1]), [1 / 3, 1 / 3, 1 / 3, 1])


# ----------------------------------------------------------------------------- cache

def _write_session(tmp, subject, session, arrays):
    paths = {}
    for contrast, arr in zip(CONTRASTS, arrays):
        p = tmp / f"{subject}_{session}_{contrast}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(arr, np.float32), np.eye(4)), str(p))
        paths[contrast] = p
    return paths


def test_cache_round_trip_and_batch(tmp_path):
    rng = np.random.default_rng(0)
    data, rows = [], []
    for i in range(5):
        arrays = rng.random((3,) + SMALL).astype(np.float32)
        data.append(arrays)
        rows.append(dict(subject=f"sub-{i:02d}", session="ses-01", age=30 + i,
                         edss=[1.0, 5.0, 6.5, 4.5, 0.0][i],
                         paths=_write_session(tmp_path, f"sub-{i:02d}", "ses-01", arrays)))
    T.build_cache(rows, tmp_path / "cache")
    cache = T.open_cache(tmp_path / "cache")
    assert isinstance(cache.images, np.memmap) and cache.images.dtype == np.float16
    assert cache.shape == (5, 3) + SMALL and len(cache) == 5
    assert np.array_equal(np.asarray(cache.images), np.stack(data).astype(np.float16))
    assert list(cache.index["label"]) == [0, 1, 1, 0, 0]
    assert list(cache.index["subject"]) == [r["subject"] for r in rows]
    assert not list((tmp_path / "cache").glob(".*"))          # no temporary files left

    idx = cache.rows_for([("sub-03", "ses-01"), ("sub-01", "ses-01"), ("sub-03", "ses-01")])
    assert list(idx) == [3, 1, 3]
    x, age, label, edss = cache.batch(idx, "cpu")
    assert x.dtype == torch.float32 and x.shape == (3, 3) + SMALL
    assert torch.equal(x, torch.from_numpy(np.stack(data)[[3, 1, 3]].astype(np.float16)).float())
    assert age.tolist() == [33.0, 31.0, 33.0]
    assert label.tolist() == [0.0, 1.0, 0.0] and edss.tolist() == [4.5, 5.0, 4.5]
    with pytest.raises(ValueError, match="sub-09"):
        cache.rows_for([("sub-09", "ses-01")])


def test_cache_shape_mismatch_names_session(tmp_path):
    good = _write_session(tmp_path, "sub-01", "ses-01", np.zeros((3,) + SMALL))
    bad_arrays = [np.zeros(SMALL), np.zeros((16, 16, 21)), np.zeros(SMALL)]
    bad = _write_session(tmp_path, "sub-02", "ses-02", bad_arrays)
    rows = [dict(subject="sub-01", session="ses-01", age=40, edss=2, paths=good),
            dict(subject="sub-02", session="ses-02", age=40, edss=2, paths=bad)]
    with pytest.raises(ValueError, match="sub-02 session ses-02: MWF"):
        T.build_cache(rows, tmp_path / "cache")
    assert not (tmp_path / "cache" / "images.npy").exists()
    assert not list((tmp_path / "cache").glob(".*"))


def test_cache_rejects_unscaled_maps(tmp_path):
    arrays = np.zeros((3,) + SMALL)
    arrays[0, 3, 3, 3] = 1800.0                                # qT1 still in ms
    paths = _write_session(tmp_path, "sub-01", "ses-01", arrays)
    with pytest.raises(ValueError, match="sub-01 session ses-01: qT1"):
        T.build_cache([dict(subject="sub-01", session="ses-01", age=40, edss=2,
                            paths=paths)], tmp_path / "cache")


# ----------------------------------------------------------------------------- metrics

def test_binary_metrics_by_hand():
    label = [1, 1, 1, 0, 0, 0, 0, 1]
    prob = [0.9, 0.6, 0.4, 0.2, 0.5, 0.1, 0.3, 0.7]
    # predicted severe (p >= 0.5): 1 1 0 0 1 0 0 1 -> TP 3, FN 1, TN 3, FP 1
    m = E.binary_metrics(label, prob)
    assert m["n"] == 8
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(3 / 4)
    # AUC: pairs (pos, neg) with pos > neg: 0.9:4 0.6:4 0.4:3 0.7:4 -> 15 / 16
    assert m["auc"] == pytest.approx(15 / 16)
    one_class = E.binary_metrics([1, 1], [0.7, 0.2])
    assert math.isnan(one_class["auc"]) and math.isnan(one_class["specificity"])
    assert one_class["sensitivity"] == 0.5


def _pred(subjects, labels, probs, att=None):
    df = pd.DataFrame({"subject": subjects, "session": "ses-01", "edss": 0.0,
                       "label": labels, "prob": probs})
    if att is not None:
        for j, c in enumerate(CONTRASTS):
            df[f"a_{c}"] = [a[j] for a in att]
    return df


def test_table_ii_by_hand():
    val = {0: _pred(["a", "b", "c", "d"], [0, 0, 1, 1], [0.2, 0.6, 0.7, 0.4]),   # AUC 0.75
           1: _pred(["e", "f", "g", "h"], [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]),   # AUC 1
           2: _pred(["i", "j", "k", "l"], [0, 1, 0, 1], [0.3, 0.4, 0.6, 0.9])}   # AUC 0.75
    test_subjects, test_labels = ["t1", "t2", "t3", "t4"], [0, 0, 1, 1]
    test = {0: _pred(test_subjects, test_labels, [0.2, 0.4, 0.3, 0.9]),
            1: _pred(test_subjects, test_labels, [0.6, 0.2, 0.4, 0.1]),
            2: _pred(test_subjects, test_labels, [0.4, 0.6, 0.8, 0.5])}
    test[2] = test[2].iloc[::-1].reset_index(drop=True)       # row order must not matter
    tab = E.table_ii(val, test)
    assert list(zip(tab["set"], tab["model"])) == [
        ("validation", "fold 0"), ("validation", "fold 1"), ("validation", "fold 2"),
        ("validation", "mean"), ("validation", "pooled"), ("test", "best fold 1"),
        ("test", "mean of folds")]
    r = tab.set_index("model")
    assert r.loc["fold 0", "auc"] == pytest.approx(0.75)
    assert r.loc["fold 0", "accuracy"] == pytest.approx(0.5)
    assert r.loc["mean", "auc"] == pytest.approx((0.75 + 1 + 0.75) / 3)
    assert r.loc["mean", "accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert r.loc["mean", "n"] == 12
    # pooled: the twelve validation sessions together, counted pair by pair
    pos = [0.7, 0.4, 0.8, 0.9, 0.4, 0.9]
    neg = [0.2, 0.6, 0.1, 0.2, 0.3, 0.6]
    pairs = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    assert r.loc["pooled", "auc"] == pytest.approx(pairs / 36)
    assert r.loc["pooled", "n"] == 12
    # best fold 1 on test: probs 0.6 0.2 0.4 0.1, labels 0 0 1 1
    assert r.loc["best fold 1", "auc"] == pytest.approx(1 / 4)
    assert r.loc["best fold 1", "specificity"] == pytest.approx(0.5)
    assert r.loc["best fold 1", "sensitivity"] == pytest.approx(0.0)
    # mean of folds: t1 (0.2+0.6+0.4)/3=0.4, t2 0.4, t3 0.5, t4 0.5
    combined = E.mean_of_folds(test)
    assert np.allclose(combined["prob"], [0.4, 0.4, 0.5, 0.5])
    assert r.loc["mean of folds", "auc"] == pytest.approx(1.0)
    assert r.loc["mean of folds", "accuracy"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="other sessions"):
        E.table_ii(val, {**test, 2: test[2].iloc[:3]})


def test_mean_attention_over_correct_sessions():
    df = _pred(["a", "b", "c", "d"], [1, 0, 1, 0], [0.8, 0.3, 0.2, 0.9],
               att=[(0.5, 0.2, 0.3), (0.3, 0.3, 0.4), (0.9, 0.05, 0.05), (0.1, 0.1, 0.8)])
    out = E.mean_attention(df).set_index("contrast")
    assert list(out.index) == list(CONTRASTS)
    assert out.loc["qT1", "mean_attention"] == pytest.approx(0.4)
    assert out.loc["MWF", "mean_attention"] == pytest.approx(0.25)
    assert out.loc["NDI", "mean_attention"] == pytest.approx(0.35)
    assert (out["n"] == 2).all()


def test_plot_roc_writes_png(tmp_path):
    path = tmp_path / "fig" / "roc.png"
    F.plot_roc({"fold 0": ([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]),
                "test": ([0, 1, 0, 1], [0.2, 0.8, 0.3, 0.7])}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(path.parent.glob(".*"))


# ----------------------------------------------------------------------------- training

N_TRAIN, N_VAL = 24, 10


@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory):
    """Sessions whose label is carried by a bright blob in qT1 (with smooth background)."""
    tmp = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(42)
    rows = []
    n = N_TRAIN + N_VAL
    labels = np.array([i % 3 == 0 for i in range(n)], dtype=int)    # imbalanced: 1/3 severe
    for i in range(n):
        arrays = 0.2 + 0.2 * rng.random((3,) + SMALL)
        if labels[i]:
            arrays[0, 5:11, 5:11, 7:13] = 0.95
        edss = 6.0 if labels[i] else 2.0
        rows.append(dict(subject=f"sub-{i:02d}", session="ses-01", age=35 + i % 20,
                         edss=edss, paths=_write_session(tmp, f"sub-{i:02d}", "ses-01",
                                                         arrays)))
    T.build_cache(rows, tmp / "cache")
    return T.open_cache(tmp / "cache"), tmp


def _train(cache, out, seed, epochs=6, **kw):
    train_idx = np.arange(N_TRAIN)
    val_idx = np.arange(N_TRAIN, N_TRAIN + N_VAL)
    kw.setdefault("augment", dict(max_rotation_deg=10, noise_sd=0.05))
    logs = []
    summary = T.train_fold(cache, train_idx, val_idx, out, epochs=epochs, batch_size=8,
                           lr=3e-3, seed=seed, device="cpu", progress=False,
                           log=logs.append, num_threads=1, **kw)
    return summary, logs


@pytest.fixture(scope="module")
def runs(synthetic_cache):
    cache, tmp = synthetic_cache
    return {name: (_train(cache, tmp / name, seed)[0], tmp / name)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))}


def test_training_loss_falls_and_epochs_written(runs):
    summary, out = runs["a"]
    epochs = pd.read_csv(out / "epochs.tsv", sep="\t")
    assert list(epochs.columns) == list(T.EPOCH_COLUMNS)
    assert list(epochs["epoch"]) == [1, 2, 3, 4, 5, 6]
    loss = epochs["train_loss"].to_numpy()
    assert loss[-2:].mean() < 0.95 * loss[:2].mean()
    assert epochs["val_auc"].between(0, 1).all()
    best = int(epochs["epoch"][epochs["val_auc"].idxmax()])        # first maximum
    assert summary["best_epoch"] == best
    meta = json.loads((out / "model.json").read_text())
    assert meta["epoch"] == best and meta["seed"] == 0
    assert meta["val_auc"] == pytest.approx(epochs["val_auc"].max())
    assert meta["input_shape"] == list(SMALL) and meta["contrasts"] == list(CONTRASTS)


def test_checkpoint_reproduces_predictions(runs, synthetic_cache):
    cache, _ = synthetic_cache
    _, out = runs["a"]
    model = T.load_model(out)
    assert not model.training
    torch.set_num_threads(1)    # as in training (restored by the autouse fixture)
    state = load_file(str(out / "model.safetensors"))
    assert any("running_mean" in k for k in state)                # BN buffers saved
    pred = T.predict(model, cache, np.arange(N_TRAIN, N_TRAIN + N_VAL))
    saved = pd.read_csv(out / "val_predictions.tsv", sep="\t",
                        dtype={"subject": str, "session": str})
    assert list(pred.columns) == ["subject", "session", "edss", "label", "logit", "prob",
                                  "a_qT1", "a_MWF", "a_NDI"]
    pd.testing.assert_frame_equal(pred, saved, check_exact=True)
    assert np.allclose(pred[["a_qT1", "a_MWF", "a_NDI"]].sum(axis=1), 1.0)
    meta = json.loads((out / "model.json").read_text())
    assert E.binary_metrics(pred["label"], pred["prob"])["auc"] == meta["val_auc"]


def test_same_seed_identical_different_seed_differs(runs):
    (_, out_a), (_, out_b), (_, out_c) = runs["a"], runs["b"], runs["c"]
    wa, wb, wc = (load_file(str(o / "model.safetensors")) for o in (out_a, out_b, out_c))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ea, eb, ec = (pd.read_csv(o / "epochs.tsv", sep="\t").drop(columns="seconds")
                  for o in (out_a, out_b, out_c))
    pd.testing.assert_frame_equal(ea, eb, check_exact=True)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa if wa[k].is_floating_point())
    assert not ea["train_loss"].equals(ec["train_loss"])


def test_single_class_validation_falls_back_to_loss(synthetic_cache, tmp_path):
    cache, _ = synthetic_cache
    labels = cache.index["label"].to_numpy()
    val_idx = np.flatnonzero(labels[N_TRAIN:] == 0)[:4] + N_TRAIN
    logs = []
    summary = T.train_fold(cache, np.arange(N_TRAIN), val_idx, tmp_path, epochs=2,
                           batch_size=8, lr=3e-3, seed=0, device="cpu", progress=False,
                           log=logs.append, augment=False, num_threads=1)
    epochs = pd.read_csv(tmp_path / "epochs.tsv", sep="\t")
    assert epochs["val_auc"].isna().all()
    assert summary["best_epoch"] == int(epochs["epoch"][epochs["val_loss"].idxmin()])
    assert any("one class" in line for line in logs)
    assert json.loads((tmp_path / "model.json").read_text())["val_auc"] is None


def test_trailing_mean_by_hand():
    assert _trailing_mean([0.5, 0.7, 0.9], 2) == pytest.approx(0.8)
    assert _trailing_mean([0.5, float("nan"), 0.9], 5) == pytest.approx(0.7)
    assert math.isnan(_trailing_mean([float("nan")], 3))


@pytest.mark.parametrize("selection", ["val_auc_smoothed", "val_loss", "last"])
def test_epoch_selection(synthetic_cache, tmp_path, selection):
    """The kept epoch is the one the rule names, read back from epochs.tsv; the smoothed
    AUC is the trailing mean of the validation AUCs."""
    cache, _ = synthetic_cache
    summary, _ = _train(cache, tmp_path, 0, epochs=5, selection=selection,
                        selection_window=3)
    epochs = pd.read_csv(tmp_path / "epochs.tsv", sep="\t")
    aucs = epochs["val_auc"].to_numpy()
    smoothed = [np.mean(aucs[max(0, i - 2): i + 1]) for i in range(len(aucs))]
    assert np.allclose(epochs["val_auc_smoothed"], smoothed)
    column = {"val_auc_smoothed": epochs["val_auc_smoothed"],
              "val_loss": -epochs["val_loss"]}.get(selection)
    expected = 5 if selection == "last" else int(epochs["epoch"][column.idxmax()])
    assert summary["best_epoch"] == expected
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["epoch"] == expected and meta["training"]["selection"] == selection


@pytest.mark.parametrize("selection", ["val_loss", "last"])
def test_restarts_keep_the_best_start(synthetic_cache, tmp_path, selection):
    """Three starts: the kept model is the one whose kept epoch has the lowest validation
    loss (``last``: of its last epoch), and it is exactly what that start trains alone."""
    cache, _ = synthetic_cache
    summary, logs = _train(cache, tmp_path / "fold", 7, epochs=3, selection=selection,
                           restarts=3)
    table = pd.read_csv(tmp_path / "fold" / T.RESTARTS_FILE, sep="\t")
    assert list(table["restart"]) == [0, 1, 2] and table["seed"].iloc[0] == 7
    assert table["seed"].nunique() == 3 and table["chosen"].sum() == 1
    alone = {}
    for r, seed in zip(table["restart"], table["seed"]):
        alone[r], _ = _train(cache, tmp_path / f"alone-{r}", int(seed), epochs=3,
                             selection=selection)
        assert table.loc[r, "val_loss"] == pytest.approx(alone[r]["val_loss"])
    losses = [alone[r]["val_loss"] for r in range(3)]
    chosen = int(np.argmin(losses))
    assert summary["restart"] == chosen and bool(table.loc[chosen, "chosen"])
    kept, ref = (load_file(str(d / "model.safetensors"))
                 for d in (tmp_path / "fold", tmp_path / f"alone-{chosen}"))
    assert all(torch.equal(kept[k], ref[k]) for k in ref)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "fold" / "epochs.tsv", sep="\t").drop(columns="seconds"),
        pd.read_csv(tmp_path / f"alone-{chosen}" / "epochs.tsv", sep="\t")
        .drop(columns="seconds"))
    meta = json.loads((tmp_path / "fold" / "model.json").read_text())
    assert meta["restart"] == chosen and meta["training"]["restarts"] == 3
    assert meta["seed"] == int(table.loc[chosen, "seed"])
    assert not list((tmp_path / "fold").glob("restart-*"))
    # one start is a plain run with the seed itself
    single, _ = _train(cache, tmp_path / "single", 7, epochs=3, selection=selection)
    assert single["restart"] == 0 and single["val_loss"] == alone[0]["val_loss"]
    with pytest.raises(ValueError, match="restarts"):
        _train(cache, tmp_path / "bad", 7, epochs=1, restarts=0)


def test_cosine_schedule_and_early_stopping(synthetic_cache, tmp_path):
    cache, _ = synthetic_cache
    summary, logs = _train(cache, tmp_path / "cos", 0, epochs=4, lr_schedule="cosine")
    lr = pd.read_csv(tmp_path / "cos" / "epochs.tsv", sep="\t")["lr"].to_numpy()
    assert np.allclose(lr, [3e-3 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)])
    _train(cache, tmp_path / "const", 0, epochs=2)
    assert (pd.read_csv(tmp_path / "const" / "epochs.tsv", sep="\t")["lr"] == 3e-3).all()
    # patience 1: training stops at the first epoch that is not better than the best
    summary, logs = _train(cache, tmp_path / "stop", 0, epochs=12, selection="val_loss",
                           patience=1)
    epochs = pd.read_csv(tmp_path / "stop" / "epochs.tsv", sep="\t")
    assert summary["epochs_run"] == len(epochs) == summary["best_epoch"] + 1 or \
        (len(epochs) == 12 and summary["best_epoch"] == 12)
    loss = epochs["val_loss"].to_numpy()
    assert (np.diff(loss[:-1]) < 0).all()          # every epoch before the last improved
    if len(epochs) < 12:
        assert loss[-1] >= loss[-2] and any("early stop" in line for line in logs)
    with pytest.raises(ValueError, match="unknown selection"):
        _train(cache, tmp_path / "bad", 0, epochs=1, selection="best")


def test_train_fold_rejects_overlap(synthetic_cache, tmp_path):
    cache, _ = synthetic_cache
    with pytest.raises(ValueError, match="both the training and the validation"):
        T.train_fold(cache, np.arange(10), np.arange(8, 12), tmp_path, epochs=1,
                     device="cpu", progress=False, log=lambda *_: None)


def test_prefetched_batches_match(synthetic_cache):
    cache, _ = synthetic_cache
    chunks = [np.array([3, 1]), np.array([5, 5, 0]), np.array([7])]
    plain = list(_batch_stream(cache, chunks, torch.device("cpu"), prefetch=False))
    ahead = list(_batch_stream(cache, chunks, torch.device("cpu"), prefetch=True))
    assert len(plain) == len(ahead) == 3
    for a, b in zip(plain, ahead):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert torch.equal(plain[1][0][0], plain[1][0][1])          # duplicate rows kept


def test_bf16_training_is_recorded_and_its_predictions_follow_it(synthetic_cache, tmp_path):
    """Mixed precision (bfloat16 autocast) trains, is written into model.json and is the
    precision of the model's predictions; float32 prediction of the same weights differs
    only by bfloat16's rounding."""
    cache, _ = synthetic_cache
    out = tmp_path / "bf16"
    summary, _ = _train(cache, out, 0, epochs=2, precision="bf16")
    assert T.model_precision(out) == "bf16"
    model = T.load_model(out)
    val_idx = np.arange(N_TRAIN, N_TRAIN + N_VAL)
    saved = pd.read_csv(out / T.VAL_PREDICTIONS, sep="\t")
    again = T.predict(model, cache, val_idx, precision="bf16")
    np.testing.assert_allclose(again["prob"], saved["prob"], atol=1e-6)
    fp32 = T.predict(model, cache, val_idx)
    diff = np.abs(fp32["prob"].to_numpy() - again["prob"].to_numpy())
    assert 0 < diff.max() < 0.05           # bf16 keeps 8 bits of mantissa
    with pytest.raises(ValueError, match="precision"):
        _train(cache, tmp_path / "x", 0, epochs=1, precision="fp16")
