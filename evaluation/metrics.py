"""Audio metrics on N generated vs N real clips, each also computed real-vs-real as the floor.

- `fd`: Frechet distance between Gaussians fitted to the classifier's embeddings.
- `is_pitch`, `is_family`: Inception-style score exp(E_x KL(p(y|x) || p(y))) on each head.
- `pitch_entropy`: entropy (bits) of the predicted-pitch histogram; `family_hist` and its total
  variation distance to the real one.
- `ndb_k`: NDB/K (Richardson & Weiss 2018): k-means on real train crops, fraction of bins whose
  proportion differs (two-proportion z-test, alpha 0.05).
- `spectral`: per-mel-bin mean/std distances, spectral centroid and flatness means.
- `note_share`: share of whole clips that pass `evaluation.notecheck.check_note`.
- `partial_stability`: median over whole clips of the note check's `partial_stability` (how much
  of the spectral fine structure is held over time: real notes ~0.95, pixel noise ~0.1), so
  smeared or wavy partials show even where every clip passes the note check.
- `partial_depth`: median over whole clips of the note check's `partial_depth` (how deep the held
  partials stand above the gaps between them, nats), so a haze between partials shows.
- `nearest_train` (not a row metric): each generated and held-out clip's distance to its nearest
  training clip and the count of copies (evaluation.novelty), since a model that copies its
  training clips scores at the floor on everything above.

Every metric is computed for four rows at the same N (DEFAULT_N = 64 generated clips unless
fewer are given): `generated`, `floor` (held-out real clips: the best a model can score at this
N), `noise` and `mean_spectrum` (see REFERENCES). The floor's spread comes from bootstrap
resamples of its clips; a metric is `discriminative` only when noise lands more than
SEPARATION floor standard deviations from the floor, and only those are headline numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import librosa
import numpy as np
from scipy import linalg

from evaluation import notecheck, novelty
from evaluation.classifier import MelClassifier, predict
from evaluation.mels import MelCollection, fixed_crops, normalized
from melcore.mel_config import MelConfig, require_match

Z_CRIT = 1.959963984540054  # two-sided alpha = 0.05


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between Gaussians fitted to rows of `a` and `b` ([N, D] each).

    tr sqrt(S1 S2) is the sum of square roots of the eigenvalues of S1 S2. With S1 = Xa^T Xa /
    (n - 1) (Xa the centred rows of `a`), those are the eigenvalues of the symmetric PSD matrix
    Xa S2 Xa^T / (n - 1), an n x n problem when n <= D; otherwise of S1^1/2 S2 S1^1/2. Both stay
    real and stable when few samples make S singular.
    """
    b = np.asarray(b, dtype=np.float64)
    return frechet_to_gaussian(a, b.mean(0), np.atleast_2d(np.cov(b, rowvar=False)))


def frechet_to_gaussian(a: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """frechet_distance of rows `a` to a Gaussian given by its mean and covariance."""
    a = np.asarray(a, dtype=np.float64)
    mu1 = a.mean(0)
    s1 = np.atleast_2d(np.cov(a, rowvar=False))
    if 2 <= len(a) <= a.shape[1]:
        xa = a - mu1
        eig = linalg.eigvalsh(xa @ s2 @ xa.T / (len(a) - 1))
    else:
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
    return float(-(p * np.log2(p)).sum()) + 0.0  # never -0.0


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

    def __init__(
        self, train_features: np.ndarray, k: int = 50, seed: int = 0, min_per_bin: int = 10
    ):
        from sklearn.cluster import KMeans

        n = len(train_features)
        self.requested_k = k
        self.k = max(2, min(k, n // min_per_bin))
        self.note = None
        if self.k < k:
            self.note = (
                f"K reduced from {k} to {self.k}: {n} real train crops (< {min_per_bin} per bin)"
            )
        self.kmeans = KMeans(n_clusters=self.k, n_init=3, random_state=seed).fit(train_features)
        self.train_counts = histogram(self.kmeans.labels_, self.k)
        self.n_train = n

    def score(self, features: np.ndarray) -> dict:
        counts = histogram(self.kmeans.predict(features), self.k)
        sig = two_proportion_significant(self.train_counts, self.n_train, counts, len(features))
        return {"ndb": int(sig.sum()), "k": self.k, "ndb_k": float(sig.sum() / self.k)}


def mel_bin_frequencies(config: MelConfig) -> np.ndarray:
    fmax = config.fmax if config.fmax is not None else config.sampling_rate / 2
    return librosa.mel_frequencies(config.num_mels + 2, fmin=config.fmin, fmax=fmax, htk=False)[
        1:-1
    ]


def clip_spectral(crops: np.ndarray, config: MelConfig) -> dict:
    """Per crop of log-mel [N, M, W]: per-bin mean and mean square, mean centroid (Hz) and flatness."""
    x = crops.astype(np.float64)
    mag = np.exp(x)
    freqs = mel_bin_frequencies(config)[None, :, None]
    centroid = (mag * freqs).sum(1) / mag.sum(1)
    flatness = np.exp(x.mean(1)) / mag.mean(1)
    return {
        "mean": x.mean(2),
        "sq": (x**2).mean(2),
        "centroid": centroid.mean(1),
        "flatness": flatness.mean(1),
    }


def pooled_spectral(per_clip: dict) -> dict:
    """spectral_stats of the pooled frames from clip_spectral's per-crop values (equal widths)."""
    mean = per_clip["mean"].mean(0)
    return {
        "bin_mean": mean,
        "bin_std": np.sqrt(np.clip(per_clip["sq"].mean(0) - mean**2, 0, None)),
        "centroid_hz": float(per_clip["centroid"].mean()),
        "flatness": float(per_clip["flatness"].mean()),
    }


def spectral_stats(crops: np.ndarray, config: MelConfig) -> dict:
    """Log-mel crops [N, M, W] -> per-bin mean/std and mean spectral centroid (Hz) / flatness."""
    return pooled_spectral(clip_spectral(crops, config))


def spectral_distance(a: dict, b: dict) -> dict:
    return {
        "bin_mean_rmse": float(np.sqrt(((a["bin_mean"] - b["bin_mean"]) ** 2).mean())),
        "bin_std_rmse": float(np.sqrt(((a["bin_std"] - b["bin_std"]) ** 2).mean())),
        "centroid_hz": a["centroid_hz"],
        "centroid_hz_real": b["centroid_hz"],
        "flatness": a["flatness"],
        "flatness_real": b["flatness"],
    }


# Scalars every row carries, and where each lives in a row ("spectral" ones in row["spectral"]).
SCALARS = (
    "fd",
    "is_pitch",
    "is_family",
    "pitch_entropy",
    "family_tv",
    "ndb_k",
    "bin_mean_rmse",
    "bin_std_rmse",
    "centroid_hz",
    "flatness",
    "note_share",
    "partial_stability",
    "partial_depth",
)
SPECTRAL = ("bin_mean_rmse", "bin_std_rmse", "centroid_hz", "flatness")
ROWS = ("generated", "floor", "noise", "mean_spectrum")
DEFAULT_N = 64  # generated clips; the floor and both reference rows use the same count
BOOTSTRAP = 50  # resamples of the floor's clips for its spread
SEPARATION = 3.0  # noise must differ from the floor by this many floor standard deviations
REFERENCES = {
    "floor": "held-out real clips (valid, then test), as many as generated, against the same real train clips",
    "noise": "log-mels drawn uniformly per mel bin between the real train clips' 1st and 99th percentile "
    "of that bin, independently per frame, at the generated clips' length",
    "mean_spectrum": "the real train clips' mean log-mel per bin (over clips and frames) repeated over every "
    "frame of the generated clips' length: no envelope, no change over time",
}


@dataclass
class ClipFeatures:
    """What the metrics need of a set of clips, per clip (so the set can be resampled)."""

    spectral: dict  # clip_spectral of the crops
    pred: dict  # classifier outputs per clip
    ndb_labels: np.ndarray  # k-means bin per clip
    is_note: np.ndarray  # note check per whole clip
    note_check: dict  # notecheck.summarize of the whole clips
    partial_stability: np.ndarray  # notecheck's partial_stability per whole clip
    partial_depth: np.ndarray  # notecheck's partial_depth per whole clip

    def gaussian(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of the embeddings (computed once)."""
        if not hasattr(self, "_gaussian"):
            e = self.pred["embedding"]
            self._gaussian = (e.mean(0), np.atleast_2d(np.cov(e, rowvar=False)))
        return self._gaussian


def clip_features(
    model: MelClassifier, config: MelConfig, ndb: NDB, crops: np.ndarray, mels
) -> ClipFeatures:
    x = normalized(crops, config)
    checks = notecheck.check_notes(mels)
    return ClipFeatures(
        clip_spectral(crops, config),
        predict(model, x),
        ndb.kmeans.predict(x.reshape(len(x), -1)),
        np.array([c.is_note for c in checks]),
        notecheck.summarize(checks),
        np.array([c.partial_stability for c in checks]),
        np.array([c.partial_depth for c in checks]),
    )


def _take(f: ClipFeatures, idx: np.ndarray) -> ClipFeatures:
    return ClipFeatures(
        {k: v[idx] for k, v in f.spectral.items()},
        {k: v[idx] for k, v in f.pred.items()},
        f.ndb_labels[idx],
        f.is_note[idx],
        f.note_check,
        f.partial_stability[idx],
        f.partial_depth[idx],
    )


def row_metrics(
    f: ClipFeatures, ref: ClipFeatures, ndb: NDB, config: MelConfig, real_spec: dict
) -> dict:
    """All metrics of one set of clips against the real reference clips."""
    from evaluation.classifier import HEADS

    pred, real_pred = f.pred, ref.pred
    pitch_hist = histogram(pred["pitch"].argmax(1), HEADS["pitch"])
    fam, fam_real = (
        histogram(pred["family"].argmax(1), HEADS["family"]),
        histogram(real_pred["family"].argmax(1), HEADS["family"]),
    )
    counts = histogram(f.ndb_labels, ndb.k)
    sig = two_proportion_significant(ndb.train_counts, ndb.n_train, counts, len(f.ndb_labels))
    out = {
        "n": len(f.is_note),
        "fd": frechet_to_gaussian(pred["embedding"], *ref.gaussian()),
        "is_pitch": inception_score(pred["pitch"]),
        "is_family": inception_score(pred["family"]),
        "pitch_entropy": entropy_bits(pitch_hist),
        "pitch_entropy_real": entropy_bits(histogram(real_pred["pitch"].argmax(1), HEADS["pitch"])),
        "family_hist": fam.tolist(),
        "family_hist_real": fam_real.tolist(),
        "family_tv": total_variation(fam, fam_real),
        "ndb": int(sig.sum()),
        "k": ndb.k,
        "ndb_k": float(sig.sum() / ndb.k),
        "note_share": float(f.is_note.mean()),
        # How held the partials are, as a distribution: the per-sample check only asks "not noise".
        "partial_stability": float(np.median(f.partial_stability)),
        "partial_depth": float(np.median(f.partial_depth)),
    }
    out["spectral"] = spectral_distance(pooled_spectral(f.spectral), real_spec)
    return out


def scalar(row: dict, key: str) -> float | None:
    if row is None:
        return None
    v = (row.get("spectral") or {}).get(key) if key in SPECTRAL else row.get(key)
    return None if v is None else float(v)


def floor_spread(
    f: ClipFeatures,
    ref: ClipFeatures,
    ndb: NDB,
    config: MelConfig,
    real_spec: dict,
    rng: np.random.Generator,
    b: int = BOOTSTRAP,
) -> dict:
    """Standard deviation of every scalar over `b` bootstrap resamples of the floor's clips."""
    values: dict[str, list[float]] = {k: [] for k in SCALARS}
    n = len(f.is_note)
    for _ in range(b):
        row = row_metrics(_take(f, rng.integers(0, n, n)), ref, ndb, config, real_spec)
        for k in SCALARS:
            values[k].append(scalar(row, k))
    return {k: float(np.std(v)) for k, v in values.items()}


def scalar_table(rows: dict, spread: dict | None) -> dict:
    """Per scalar: each row's value, the floor's spread and whether noise is clearly off the floor.

    discriminative: |noise - floor| > SEPARATION x the floor's bootstrap standard deviation (and
    > 1e-9). A metric that noise cannot move off the floor says nothing about a model.
    """
    table = {}
    for k in SCALARS:
        entry = {name: scalar(rows.get(name), k) for name in ROWS}
        sd = (spread or {}).get(k)
        entry["floor_sd"] = sd
        f, nz = entry["floor"], entry["noise"]
        entry["discriminative"] = bool(
            f is not None
            and nz is not None
            and sd is not None
            and abs(nz - f) > max(SEPARATION * sd, 1e-9)
        )
        table[k] = entry
    return table


def reference_mels(train: list[np.ndarray], lengths: list[int], rng: np.random.Generator) -> dict:
    """The two reference rows' clips (see REFERENCES), one per generated clip length."""
    stack = np.concatenate(train, axis=1).astype(np.float64)
    lo = np.percentile(stack, 1, axis=1)[:, None]
    hi = np.percentile(stack, 99, axis=1)[:, None]
    mean = stack.mean(axis=1, keepdims=True)
    noise = [rng.uniform(lo, hi, (len(lo), t)).astype(np.float32) for t in lengths]
    flat = [np.repeat(mean, t, axis=1).astype(np.float32) for t in lengths]
    return {"noise": noise, "mean_spectrum": flat}


def audio_metrics(
    real_train: MelCollection,
    real_floor: MelCollection | None,
    generated: MelCollection,
    model: MelClassifier,
    classifier_config: MelConfig,
    k: int = 50,
    seed: int = 0,
) -> dict:
    """Generated, floor, noise and mean_spectrum rows, each N clips against N real train clips.

    The top level holds the generated row (as before), `floor`/`noise`/`mean_spectrum` the
    others, `scalars` the side-by-side table with the floor's spread and `discriminative`.
    """
    from threadpoolctl import threadpool_limits

    # Matrices here are at most 128 x 128: BLAS threads only spin-wait (10x slower on a busy machine).
    with threadpool_limits(1, user_api="blas"):
        return _audio_metrics(real_train, real_floor, generated, model, classifier_config, k, seed)


def _audio_metrics(real_train, real_floor, generated, model, classifier_config, k, seed) -> dict:
    require_match(real_train.config, generated.config, real_train.source, generated.source)
    require_match(real_train.config, classifier_config, real_train.source, "classifier")
    config = real_train.config
    width = model.cfg.crop_width
    rng = np.random.default_rng(seed)
    n = len(generated)
    notes = []
    if n < DEFAULT_N:
        notes.append(f"only {n} generated clips (default {DEFAULT_N}): metrics at this N are noisy")
    train_crops_all = fixed_crops(real_train.mels, width, seed)
    ndb = NDB(normalized(train_crops_all, config).reshape(len(train_crops_all), -1), k=k, seed=seed)
    if ndb.note:
        notes.append(ndb.note)
    n_ref = min(n, len(real_train))
    if n_ref < n:
        notes.append(f"only {n_ref} real train clips for {n} generated")
    ref_idx = np.sort(rng.choice(len(real_train), size=n_ref, replace=False))
    ref_mels = [real_train.mels[i] for i in ref_idx]
    ref = clip_features(model, config, ndb, train_crops_all[ref_idx], ref_mels)
    real_spec = pooled_spectral(ref.spectral)
    rows: dict[str, dict | None] = {}
    gen = clip_features(
        model, config, ndb, fixed_crops(generated.mels, width, seed + 1), generated.mels
    )
    rows["generated"] = row_metrics(gen, ref, ndb, config, real_spec)
    rows["generated"]["note_check"] = gen.note_check
    spread, floor_mels = None, None
    if real_floor is not None and len(real_floor) >= 2:
        m = min(n, len(real_floor))
        if m < n:
            notes.append(f"floor uses {m} held-out clips (fewer than {n} generated)")
        idx = np.sort(rng.choice(len(real_floor), size=m, replace=False))
        floor_mels = [real_floor.mels[i] for i in idx]
        fl = clip_features(model, config, ndb, fixed_crops(floor_mels, width, seed + 2), floor_mels)
        rows["floor"] = row_metrics(fl, ref, ndb, config, real_spec)
        rows["floor"].update(source=real_floor.source, note_check=fl.note_check)
        spread = floor_spread(fl, ref, ndb, config, real_spec, np.random.default_rng(seed + 3))
    else:
        rows["floor"] = None
        notes.append("floor not computed: no held-out real clips")
    refs = reference_mels(
        ref_mels, [m.shape[1] for m in generated.mels], np.random.default_rng(seed + 4)
    )
    for name, mels in refs.items():
        feats = clip_features(model, config, ndb, fixed_crops(mels, width, seed + 5), mels)
        rows[name] = row_metrics(feats, ref, ndb, config, real_spec)
        rows[name].update(source=REFERENCES[name], note_check=feats.note_check)
    result = dict(rows["generated"])
    result["n_real"] = n_ref
    result.update({name: rows[name] for name in ROWS[1:]})
    result["scalars"] = scalar_table(rows, spread)
    result["headline"] = [k for k, v in result["scalars"].items() if v["discriminative"]]
    result["nearest_train"] = novelty.nearest_train_check(
        real_train.mels, floor_mels, generated.mels, config, seed
    )
    notes.extend(result["nearest_train"].pop("notes"))
    result["references"] = dict(REFERENCES)
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
    limit: int | None = DEFAULT_N,
    seed: int = 0,
) -> dict:
    """Files in, metrics JSON out: real train as reference, held-out valid + test as the floor.

    `limit` generated clips at most (default DEFAULT_N); the floor draws as many held-out clips."""
    from evaluation.classifier import load_classifier
    from evaluation.mels import load_mel_folder, load_melset
    from melcore.atomic import write_json
    from melcore.errors import UserError

    train = load_melset(real_dir, "train")
    if not len(train):
        raise UserError(f"--real {real_dir}: no train clips (needed as the reference)")
    held = [load_melset(real_dir, split) for split in ("valid", "test")]
    floor = MelCollection(
        [m for h in held for m in h.mels],
        train.config,
        [x for h in held for x in h.names],
        [x for h in held for x in h.labels],
        f"{real_dir}:valid+test",
    )
    generated = load_mel_folder(generated_dir, limit)
    require_match(
        train.config, generated.config, f"--real {real_dir}", f"--generated {generated_dir}"
    )
    model, clf_config = load_classifier(classifier_dir)
    result = _jsonable(audio_metrics(train, floor, generated, model, clf_config, k=k, seed=seed))
    if out_path is not None:
        write_json(out_path, result)
    return result
