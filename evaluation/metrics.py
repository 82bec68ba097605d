"""Audio metrics on N generated vs N real clips, each also computed real-vs-real as the floor.

- `fd`: Frechet distance between Gaussians fitted to the classifier's embeddings.
- `is_pitch`, `is_family`: Inception-style score exp(E_x KL(p(y|x) || p(y))) on each head.
- `pitch_entropy`: entropy (bits) of the predicted-pitch histogram; `family_hist` and its total
  variation distance to the real one.
- `ndb_k`: NDB/K (Richardson & Weiss 2018): k-means on real train crops, fraction of bins whose
  proportion differs (two-proportion z-test, alpha 0.05).
- `spectral`: per-mel-bin mean/std distances, spectral centroid and flatness means.
"""

from __future__ import annotations

import math

import librosa
import numpy as np
from scipy import linalg

from evaluation.classifier import MelClassifier, predict
from evaluation.mels import MelCollection, fixed_crops, normalized
from melcore.mel_config import MelConfig, require_match

Z_CRIT = 1.959963984540054  # two-sided alpha = 0.05


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between Gaussians fitted to rows of `a` and `b` ([N, D] each).

    tr sqrt(S1 S2) is computed as the sum of sqrt eigenvalues of the symmetric PSD matrix
    S1^1/2 S2 S1^1/2, which stays real and stable when few samples make S singular.
    """
    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = np.atleast_2d(np.cov(a, rowvar=False))
    s2 = np.atleast_2d(np.cov(b, rowvar=False))
    w, v = linalg.eigh(s1)
    s1_half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = linalg.eigvalsh(s1_half @ s2 @ s1_half)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(max(0.0, diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean))


def inception_score(probs: np.ndarray) -> float:
    """exp(mean_x KL(p(y|x) || p(y))) for probabilities [N, C]: 1 .. C."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    p = p / p.sum(1, keepdims=True)
    marginal = p.mean(0, keepdims=True)
    kl = (p * (np.log(p) - np.log(marginal))).sum(1)
    return float(math.exp(kl.mean()))


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy (bits) of a histogram."""
    c = np.asarray(counts, dtype=np.float64)
    if c.sum() <= 0:
        return 0.0
    p = c[c > 0] / c.sum()
    return float(-(p * np.log2(p)).sum())


def histogram(pred: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(np.asarray(pred, dtype=np.int64), minlength=n)[:n]


def total_variation(h1: np.ndarray, h2: np.ndarray) -> float:
    p, q = h1 / max(h1.sum(), 1), h2 / max(h2.sum(), 1)
    return float(0.5 * np.abs(p - q).sum())


def two_proportion_significant(k1: np.ndarray, n1: int, k2: np.ndarray, n2: int) -> np.ndarray:
    """Per bin: do proportions k1/n1 and k2/n2 differ (two-sided z-test, alpha 0.05)?"""
    p1, p2 = k1 / n1, k2 / n2
    pooled = (k1 + k2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = np.divide(np.abs(p1 - p2), se, out=np.zeros_like(se), where=se > 0)
    return z > Z_CRIT


class NDB:
    """k-means bins fitted once on real train features; `score` tests a sample set against them."""

    def __init__(self, train_features: np.ndarray, k: int = 50, seed: int = 0, min_per_bin: int = 10):
        from sklearn.cluster import KMeans

        n = len(train_features)
        self.requested_k = k
        self.k = max(2, min(k, n // min_per_bin))
        self.note = None
        if self.k < k:
            self.note = f"K reduced from {k} to {self.k}: {n} real train crops (< {min_per_bin} per bin)"
        self.kmeans = KMeans(n_clusters=self.k, n_init=3, random_state=seed).fit(train_features)
        self.train_counts = histogram(self.kmeans.labels_, self.k)
        self.n_train = n

    def score(self, features: np.ndarray) -> dict:
        counts = histogram(self.kmeans.predict(features), self.k)
        sig = two_proportion_significant(self.train_counts, self.n_train, counts, len(features))
        return {"ndb": int(sig.sum()), "k": self.k, "ndb_k": float(sig.sum() / self.k)}


def mel_bin_frequencies(config: MelConfig) -> np.ndarray:
    fmax = config.fmax if config.fmax is not None else config.sampling_rate / 2
    return librosa.mel_frequencies(config.num_mels + 2, fmin=config.fmin, fmax=fmax, htk=False)[1:-1]


def spectral_stats(crops: np.ndarray, config: MelConfig) -> dict:
    """Log-mel crops [N, M, W] -> per-bin mean/std and mean spectral centroid (Hz) / flatness."""
    frames = crops.transpose(0, 2, 1).reshape(-1, crops.shape[1]).astype(np.float64)
    mag = np.exp(frames)
    freqs = mel_bin_frequencies(config)
    centroid = (mag * freqs).sum(1) / mag.sum(1)
    flatness = np.exp(np.log(mag).mean(1)) / mag.mean(1)
    return {
        "bin_mean": frames.mean(0),
        "bin_std": frames.std(0),
        "centroid_hz": float(centroid.mean()),
        "flatness": float(flatness.mean()),
    }


def spectral_distance(a: dict, b: dict) -> dict:
    return {
        "bin_mean_rmse": float(np.sqrt(((a["bin_mean"] - b["bin_mean"]) ** 2).mean())),
        "bin_std_rmse": float(np.sqrt(((a["bin_std"] - b["bin_std"]) ** 2).mean())),
        "centroid_hz": a["centroid_hz"],
        "centroid_hz_real": b["centroid_hz"],
        "flatness": a["flatness"],
        "flatness_real": b["flatness"],
    }


def compare(
    model: MelClassifier,
    config: MelConfig,
    ndb: NDB,
    real_crops: np.ndarray,
    real_pred: dict,
    test_crops: np.ndarray,
) -> dict:
    """All metrics of `test_crops` (log-mel [N, M, W]) against the real reference."""
    from evaluation.classifier import HEADS

    x = normalized(test_crops, config)
    pred = predict(model, x)
    pitch_hist = histogram(pred["pitch"].argmax(1), HEADS["pitch"])
    fam, fam_real = histogram(pred["family"].argmax(1), HEADS["family"]), histogram(real_pred["family"].argmax(1), HEADS["family"])
    out = {
        "n": len(test_crops),
        "fd": frechet_distance(pred["embedding"], real_pred["embedding"]),
        "is_pitch": inception_score(pred["pitch"]),
        "is_family": inception_score(pred["family"]),
        "pitch_entropy": entropy_bits(pitch_hist),
        "pitch_entropy_real": entropy_bits(histogram(real_pred["pitch"].argmax(1), HEADS["pitch"])),
        "family_hist": fam.tolist(),
        "family_hist_real": fam_real.tolist(),
        "family_tv": total_variation(fam, fam_real),
    }
    out.update(ndb.score(x.reshape(len(x), -1)))
    out["spectral"] = spectral_distance(spectral_stats(test_crops, config), spectral_stats(real_crops, config))
    return out


def audio_metrics(
    real_train: MelCollection,
    real_floor: MelCollection | None,
    generated: MelCollection,
    model: MelClassifier,
    classifier_config: MelConfig,
    k: int = 50,
    seed: int = 0,
) -> dict:
    """Generated vs N real train clips, and (floor) N held-out real clips vs the same train clips."""
    require_match(real_train.config, generated.config, real_train.source, generated.source)
    require_match(real_train.config, classifier_config, real_train.source, "classifier")
    config = real_train.config
    width = model.cfg.crop_width
    rng = np.random.default_rng(seed)
    n = len(generated)
    notes = []
    train_crops_all = fixed_crops(real_train.mels, width, seed)
    ndb = NDB(normalized(train_crops_all, config).reshape(len(train_crops_all), -1), k=k, seed=seed)
    if ndb.note:
        notes.append(ndb.note)
    n_ref = min(n, len(real_train))
    if n_ref < n:
        notes.append(f"only {n_ref} real train clips for {n} generated")
    ref_idx = np.sort(rng.choice(len(real_train), size=n_ref, replace=False))
    real_crops = train_crops_all[ref_idx]
    real_pred = predict(model, normalized(real_crops, config))
    gen_crops = fixed_crops(generated.mels, width, seed + 1)
    result = compare(model, config, ndb, real_crops, real_pred, gen_crops)
    result["n_real"] = n_ref
    if real_floor is not None and len(real_floor) >= 2:
        m = min(n, len(real_floor))
        if m < n:
            notes.append(f"floor uses {m} held-out clips (fewer than {n} generated)")
        idx = np.sort(rng.choice(len(real_floor), size=m, replace=False))
        floor_crops = fixed_crops([real_floor.mels[i] for i in idx], width, seed + 2)
        result["floor"] = compare(model, config, ndb, real_crops, real_pred, floor_crops)
        result["floor"]["source"] = real_floor.source
    else:
        result["floor"] = None
        notes.append("floor not computed: no held-out real clips")
    result["generated"] = generated.source
    result["real"] = real_train.source
    result["notes"] = notes
    return result


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def run_audio_metrics(
    real_dir: str,
    generated_dir: str,
    classifier_dir: str,
    out_path: str | None = None,
    k: int = 50,
    limit: int | None = None,
    seed: int = 0,
) -> dict:
    """Files in, metrics JSON out: real train as reference, valid (else test) as the floor."""
    from evaluation.classifier import load_classifier
    from evaluation.mels import load_mel_folder, load_melset
    from melcore.atomic import write_json
    from melcore.errors import UserError

    train = load_melset(real_dir, "train")
    if not len(train):
        raise UserError(f"--real {real_dir}: no train clips (needed as the reference)")
    floor = None
    for split in ("valid", "test"):
        held = load_melset(real_dir, split)
        if len(held) >= 2:
            floor = held
            break
    generated = load_mel_folder(generated_dir, limit)
    require_match(train.config, generated.config, f"--real {real_dir}", f"--generated {generated_dir}")
    model, clf_config = load_classifier(classifier_dir)
    result = _jsonable(audio_metrics(train, floor, generated, model, clf_config, k=k, seed=seed))
    if out_path is not None:
        write_json(out_path, result)
    return result
