"""AnoGAN (Schlegl et al., IPMI 2017) and f-AnoGAN's izif encoder (Schlegl et al., MedIA 2019).

A DCGAN learns the appearance of *normal* tissue only (nodule-free 64 x 64 axial
lung patches, values in [0, 1]). A query patch x is explained by the generator
image G(z) closest to it; what G cannot reproduce is anomalous.

- Residual loss (AnoGAN eq. 3):        R(z) = sum |x - G(z)|
- Discrimination loss (eq. 4, the feature-matching form of sec. 2.2):
                                        D(z) = sum |f(x) - f(G(z))|
  with f an intermediate layer of the discriminator.
- Anomaly score (eq. 5 / eq. 6):       A = (1 - lambda) R + lambda D,  lambda = 0.1.
- Iterative mapping: z_0 ~ N(0, I), then ~500 Adam steps on A(z).
- f-AnoGAN izif encoder E, trained with G and D frozen, and its one-pass score
  (f-AnoGAN eq. 7-9):
      L_izif(x) = |x - G(E(x))|^2 / n + kappa |f(x) - f(G(E(x)))|^2 / n_d
  with n pixels and n_d features.

The residual image |x - G(z)| is the anomaly map.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from scipy.stats import rankdata
from torch import Tensor, nn
from tqdm.auto import tqdm

from focalmix_lib.data.coordinates import ScanGeometry, voxel_to_world
from focalmix_lib.data.dataset import PreprocessedScan
from focalmix_lib.data.luna_csv import FindingTable
from focalmix_lib.related import candidates

PATCH_SIZE = 64


@dataclass(frozen=True)
class AnoGANConfig:
    """Sizes and schedules of the AnoGAN chapter (``standard`` = field defaults)."""

    latent_dim: int = 64
    width: int = 32                # channels of the first discriminator layer
    gan_epochs: int = 30
    encoder_epochs: int = 30
    batch_size: int = 64
    gan_lr: float = 2e-4
    encoder_lr: float = 1e-3
    mapping_steps: int = 500       # gradient steps of the iterative mapping (paper: 500)
    mapping_lr: float = 0.05
    lam: float = 0.1               # lambda of the anomaly score (paper: 0.1)
    kappa: float = 1.0             # weight of the feature term of izif (f-AnoGAN: 1)

    PRESETS = {
        "quick": {"latent_dim": 32, "width": 8, "gan_epochs": 3, "encoder_epochs": 3, "batch_size": 32,
                  "mapping_steps": 20, "mapping_lr": 0.1},
        "paper": {"latent_dim": 100, "width": 64, "gan_epochs": 100, "encoder_epochs": 100},
    }


class Generator(nn.Module):
    """DCGAN generator: z (B, latent_dim) -> image (B, 1, 64, 64) in [0, 1]."""

    def __init__(self, latent_dim: int, width: int):
        super().__init__()
        self.latent_dim = latent_dim
        w = width
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, 8 * w, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(8 * w), nn.ReLU(True)]  # 4 x 4
        for c_in, c_out in ((8 * w, 4 * w), (4 * w, 2 * w), (2 * w, w)):  # 8, 16, 32
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(w, 1, 4, 2, 1), nn.Sigmoid()]  # 64 x 64
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """DCGAN discriminator without normalisation layers, so that f(x) of one patch
    does not depend on the rest of the batch (needed for per-patch scores).

    ``features(x)``: (B, 8w * 4 * 4), the last convolutional layer (AnoGAN's f);
    ``forward(x)``: (B,) real/fake logits.
    """

    def __init__(self, width: int):
        super().__init__()
        w = width
        layers: list[nn.Module] = []
        for c_in, c_out in ((1, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w)):  # 32, 16, 8, 4
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(8 * w, 1, 4, 1, 0)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x)).flatten()


class Encoder(nn.Module):
    """f-AnoGAN encoder: image (B, 1, 64, 64) -> z (B, latent_dim)."""

    def __init__(self, latent_dim: int, width: int):
        super().__init__()
        w = width
        layers: list[nn.Module] = []
        for c_in, c_out in ((1, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w)):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(8 * w * 16, latent_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def residual_loss(x: Tensor, generated: Tensor) -> Tensor:
    """AnoGAN eq. 3, per patch: R = sum |x - G(z)|. (B, 1, H, W) x2 -> (B,)."""
    return (x - generated).abs().flatten(1).sum(1)


def discrimination_loss(features_x: Tensor, features_generated: Tensor) -> Tensor:
    """AnoGAN's feature-matching discrimination loss, per patch: D = sum |f(x) - f(G(z))|.
    (B, n_d) x2 -> (B,)."""
    return (features_x - features_generated).abs().flatten(1).sum(1)


def anomaly_score(residual_loss: Tensor, discrimination_loss: Tensor, lam: float = 0.1) -> Tensor:
    """AnoGAN eq. 5/6: A = (1 - lambda) R + lambda D (any matching shapes)."""
    return (1.0 - lam) * residual_loss + lam * discrimination_loss


def izif_loss(x: Tensor, reconstruction: Tensor, features_x: Tensor, features_reconstruction: Tensor,
              kappa: float = 1.0) -> Tensor:
    """f-AnoGAN's izif loss and anomaly score, per patch:
    |x - G(E(x))|^2 / n + kappa |f(x) - f(G(E(x)))|^2 / n_d. -> (B,)."""
    image_term = (x - reconstruction).pow(2).flatten(1).mean(1)
    feature_term = (features_x - features_reconstruction).pow(2).flatten(1).mean(1)
    return image_term + kappa * feature_term


def roc_auc(scores: NDArray[np.floating], labels: NDArray[np.integer] | NDArray[np.bool_]) -> float:
    """Area under the ROC curve, higher score = positive (label 1).

    Computed as the Mann-Whitney statistic with mid-ranks for ties:
    AUC = (sum of positive ranks - P (P + 1) / 2) / (P N), the probability that a
    random positive outscores a random negative (ties count one half).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(labels).ravel().astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC AUC needs both classes; got {n_pos} positives and {n_neg} negatives")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: NDArray[np.floating], labels: NDArray[np.integer] | NDArray[np.bool_]
              ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """False- and true-positive rates (each (K,), from (0, 0) to (1, 1)) over all score thresholds."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(labels).ravel().astype(bool)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_pos = scores[order], positive[order]
    # One point per distinct threshold: the last index of each run of equal scores.
    last = np.r_[np.flatnonzero(np.diff(sorted_scores) != 0), len(scores) - 1]
    tp = np.cumsum(sorted_pos)[last]
    fp = np.cumsum(~sorted_pos)[last]
    return np.r_[0.0, fp / max(1, fp[-1])], np.r_[0.0, tp / max(1, tp[-1])]


@dataclass
class AnoGAN:
    """A trained generator, discriminator and (optionally) izif encoder, in eval mode."""

    generator: Generator
    discriminator: Discriminator
    encoder: Encoder | None
    config: AnoGANConfig
    history: dict[str, list[float]]


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    return list(torch.randperm(n, generator=generator).split(batch_size))


def train_dcgan(patches: Tensor, config: AnoGANConfig, seed: int = 0, progress: bool = True) -> AnoGAN:
    """Train the DCGAN on normal patches (N, 1, 64, 64) in [0, 1] with the
    non-saturating GAN loss (Adam, beta1 = 0.5, as in DCGAN).

    ``history`` holds the mean discriminator and generator loss of each epoch.
    """
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    gen = Generator(config.latent_dim, config.width)
    disc = Discriminator(config.width)
    opt_g = torch.optim.Adam(gen.parameters(), lr=config.gan_lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.gan_lr, betas=(0.5, 0.999))
    history: dict[str, list[float]] = {"d_loss": [], "g_loss": []}
    for _ in tqdm(range(config.gan_epochs), desc="DCGAN epochs", disable=not progress):
        d_sum = g_sum = 0.0
        batches = _batches(len(patches), config.batch_size, rng)
        for index in batches:
            real = patches[index]
            z = torch.randn(len(real), config.latent_dim, generator=rng)
            fake = gen(z)
            # One-sided label smoothing (real target 0.9) keeps D from saturating on tiny data.
            d_loss = (F.binary_cross_entropy_with_logits(disc(real), torch.full((len(real),), 0.9))
                      + F.binary_cross_entropy_with_logits(disc(fake.detach()), torch.zeros(len(real))))
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_loss = F.binary_cross_entropy_with_logits(disc(fake), torch.ones(len(real)))
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            d_sum += d_loss.item()
            g_sum += g_loss.item()
        history["d_loss"].append(d_sum / len(batches))
        history["g_loss"].append(g_sum / len(batches))
    gen.eval()
    disc.eval()
    for p in [*gen.parameters(), *disc.parameters()]:
        p.requires_grad_(False)
    return AnoGAN(gen, disc, None, config, history)


def train_izif_encoder(model: AnoGAN, patches: Tensor, seed: int = 0, progress: bool = True) -> AnoGAN:
    """Train f-AnoGAN's encoder with the izif loss, G and D frozen; returns ``model``
    with ``encoder`` set and ``history["izif_loss"]`` (mean per epoch) added."""
    config = model.config
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed + 1)
    encoder = Encoder(config.latent_dim, config.width)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=config.encoder_lr)
    losses: list[float] = []
    for _ in tqdm(range(config.encoder_epochs), desc="izif encoder epochs", disable=not progress):
        total = 0.0
        batches = _batches(len(patches), config.batch_size, rng)
        for index in batches:
            x = patches[index]
            loss = izif_scores(model, x, encoder).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(total / len(batches))
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    model.encoder = encoder
    model.history["izif_loss"] = losses
    return model


def izif_scores(model: AnoGAN, x: Tensor, encoder: Encoder | None = None) -> Tensor:
    """f-AnoGAN one-pass anomaly score of patches x (B, 1, 64, 64) -> (B,)."""
    encoder = encoder if encoder is not None else model.encoder
    if encoder is None:
        raise ValueError("the model has no encoder yet; call train_izif_encoder first")
    reconstruction = model.generator(encoder(x))
    disc = model.discriminator
    return izif_loss(x, reconstruction, disc.features(x), disc.features(reconstruction), model.config.kappa)


@dataclass(frozen=True)
class MappingResult:
    """Iterative mapping of B patches: final latent codes (B, latent_dim), the
    generated images and residual maps |x - G(z)| (B, 1, 64, 64), the losses and
    scores (B,) and the score after each step (steps, B)."""

    z: Tensor
    generated: Tensor
    residual_map: Tensor
    residual: Tensor
    discrimination: Tensor
    score: Tensor
    trace: Tensor


def iterative_mapping(model: AnoGAN, x: Tensor, steps: int | None = None, seed: int = 0) -> MappingResult:
    """AnoGAN's mapping of patches x (B, 1, 64, 64) to latent space: Adam steps on
    z minimising A(z) = (1 - lambda) R(z) + lambda D(z), from z_0 ~ N(0, I).

    Patches are independent (G in eval mode, D without batch statistics), so the
    whole batch is mapped at once by minimising the sum of their scores.
    """
    config = model.config
    steps = config.mapping_steps if steps is None else steps
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(len(x), config.latent_dim, generator=rng).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=config.mapping_lr)
    features_x = model.discriminator.features(x)
    trace = []
    for _ in range(steps):
        score = _mapping_terms(model, x, features_x, z)[2]
        optimizer.zero_grad()
        score.sum().backward()
        optimizer.step()
        trace.append(score.detach())
    with torch.no_grad():
        residual, discrimination, score, generated = _mapping_terms(model, x, features_x, z)
    z = z.detach()
    return MappingResult(z, generated, (x - generated).abs(), residual, discrimination, score,
                         torch.stack(trace) if trace else score[None])


def _mapping_terms(model: AnoGAN, x: Tensor, features_x: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    generated = model.generator(z)
    residual = residual_loss(x, generated)
    discrimination = discrimination_loss(features_x, model.discriminator.features(generated))
    return residual, discrimination, anomaly_score(residual, discrimination, model.config.lam), generated


@dataclass(frozen=True)
class ScoringComparison:
    """Iterative mapping against the izif encoder on the same labelled patches."""

    iterative_scores: NDArray[np.float64]
    encoder_scores: NDArray[np.float64]
    labels: NDArray[np.int64]
    iterative_auc: float
    encoder_auc: float
    iterative_seconds_per_patch: float
    encoder_seconds_per_patch: float


def compare_scoring(model: AnoGAN, patches: Tensor, labels: NDArray[np.integer], batch_size: int = 64,
                    seed: int = 0, progress: bool = True) -> ScoringComparison:
    """Score patches (N, 1, 64, 64) both ways, time them and compute ROC AUC (label 1 = nodule)."""
    chunks = list(torch.arange(len(patches)).split(batch_size))
    start = time.perf_counter()
    iterative = torch.cat([iterative_mapping(model, patches[c], seed=seed + i).score
                           for i, c in enumerate(tqdm(chunks, desc="iterative mapping", disable=not progress))])
    iterative_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        encoded = torch.cat([izif_scores(model, patches[c]) for c in chunks])
    encoder_seconds = time.perf_counter() - start
    labels = np.asarray(labels, dtype=np.int64)
    it, en = iterative.numpy().astype(np.float64), encoded.numpy().astype(np.float64)
    return ScoringComparison(it, en, labels, roc_auc(it, labels), roc_auc(en, labels),
                             iterative_seconds / len(patches), encoder_seconds / len(patches))


def scores_to_probability(scores: NDArray[np.floating], normal_scores: NDArray[np.floating]) -> NDArray[np.float64]:
    """Monotone map of anomaly scores to (0, 1): sigmoid of the score standardised by
    the scores of normal patches. The FROC depends only on the order of the marks,
    so this changes nothing but the readability of the probability column."""
    normal = np.asarray(normal_scores, dtype=np.float64)
    z = (np.asarray(scores, dtype=np.float64) - normal.mean()) / max(float(normal.std()), 1e-12)
    return 1.0 / (1.0 + np.exp(-z))


def candidate_findings(
    uids: list[str], centers_zyx: list[NDArray[np.float64]], geometries: list[ScanGeometry],
    probabilities: list[NDArray[np.float64]], path: str | Path = "<anogan candidates>",
) -> FindingTable:
    """LUNA16 marks (world mm) of scored candidate points, one array of centres
    (M_s, 3) voxel (z, y, x) and probabilities (M_s,) per scan."""
    uid_column = np.asarray([uid for uid, c in zip(uids, centers_zyx) for _ in range(len(c))], dtype=str)
    world = [voxel_to_world(np.asarray(c, dtype=np.float64).reshape(-1, 3), g) for c, g in zip(centers_zyx, geometries)]
    world_xyz = np.concatenate(world) if world else np.zeros((0, 3))
    value = np.concatenate([np.asarray(p, dtype=np.float64) for p in probabilities]) if probabilities else np.zeros(0)
    return FindingTable(Path(path), uid_column, world_xyz, value, np.arange(2, len(value) + 2, dtype=np.int64))


def score_patches(model: AnoGAN, patches: Tensor, method: str = "encoder", batch_size: int = 128,
                  seed: int = 0) -> NDArray[np.float64]:
    """Anomaly scores (N,) of patches (N, 1, 64, 64): ``"encoder"`` (izif, one pass)
    or ``"iterative"`` (AnoGAN mapping)."""
    scorers: dict[str, Callable[[Tensor, int], Tensor]] = {
        "encoder": lambda x, i: izif_scores(model, x),
        "iterative": lambda x, i: iterative_mapping(model, x, seed=seed + i).score,
    }
    if method not in scorers:
        raise ValueError(f"unknown scoring method {method!r}; choose one of {sorted(scorers)}")
    out = []
    for i, chunk in enumerate(torch.arange(len(patches)).split(batch_size)):
        with torch.set_grad_enabled(method == "iterative"):
            out.append(scorers[method](patches[chunk], i).detach())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def scan_detections(model: AnoGAN, scans: list[PreprocessedScan], normal_scores: NDArray[np.floating],
                    method: str = "encoder", threshold: float = 0.3, mask_dilation: int = 1,
                    max_candidates: int = 100, progress: bool = True) -> tuple[FindingTable, FindingTable]:
    """AnoGAN as a candidate detector on whole scans.

    Candidates are the bright blobs of each scan (``candidates.bright_blob_candidates``
    on the Gaussian-smoothed volume, inside the dilated lung mask); each is scored by
    the anomaly score of the axial 64 x 64 patch centred on it, mapped to (0, 1) with
    ``scores_to_probability`` against ``normal_scores``. Returns the AnoGAN marks and,
    on the same candidates, the marks of a baseline that scores each candidate by its
    smoothed intensity (what the candidate generator alone knows).
    """
    uids, centres, geometries, anomaly, intensity = [], [], [], [], []
    for scan in tqdm(scans, desc=f"AnoGAN detector ({method})", disable=not progress):
        points, values = candidates.bright_blob_candidates(
            candidates.smoothed_volume(scan), scan.lung_mask, threshold, max_candidates=max_candidates,
            mask_dilation=mask_dilation)
        patches = torch.from_numpy(candidates.stack_axial_patches(scan, points, PATCH_SIZE))
        uids.append(scan.uid)
        centres.append(points.astype(np.float64))
        geometries.append(scan.geometry)
        anomaly.append(scores_to_probability(score_patches(model, patches, method), normal_scores))
        intensity.append(values)
    return (candidate_findings(uids, centres, geometries, anomaly, "<anogan marks>"),
            candidate_findings(uids, centres, geometries, intensity, "<blob intensity marks>"))
