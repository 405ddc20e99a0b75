"""Balanced and discriminative contrastive learning (BDCL, ICASSP 2024) for imbalanced
candidate classification (false-positive reduction), with its baselines and metrics.

Two-stage training (as in decoupled long-tail learning):

1. representation learning: an encoder trained with the chosen loss, on
   instance-sampled batches (each candidate seen once an epoch);
2. classifier re-training: the encoder frozen, a fresh linear classifier trained with
   cross-entropy on class-balanced batches (every class drawn equally often).

Losses for stage 1 (``LOSS_VARIANTS``): cross-entropy, focal, supervised contrastive
(SupCon, Khosla et al. 2020) and BDCL = SupCon with

- TDL, temperature dynamic learning: one learnable temperature per class,
  tau_c = tau_min + softplus(theta_c) > 0, trained by the same loss; anchor i uses
  the temperature of its own class, tau_{y_i};
- HEP, hard-example prototypes: per class an exponential moving average of the
  (normalised) features of that class's hard examples in each batch (the fraction
  with the highest per-anchor contrastive loss); each prototype is one more key,
  a positive for the anchors of its class and a term of every anchor's denominator.

For anchor i with normalised feature z_i, keys K(i) (the batch without i, plus the
prototypes) and positives P(i) (keys of i's class):

    L_i = -1/|P(i)| sum_{p in P(i)} log [ exp(z_i . k_p / tau_i) / sum_{a in K(i)} exp(z_i . k_a / tau_i) ]

and the loss is the mean of L_i over anchors with |P(i)| > 0 (Khosla et al. eq. 2,
L^sup_out). Without TDL and HEP it is SupCon with one temperature.

Metrics: accuracy, G-mean, macro F1 and the index of balanced accuracy (IBA).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn
from tqdm.auto import tqdm

LOSS_VARIANTS = ("CE", "Focal", "SupCon", "BDCL w/o TDL", "BDCL w/o HEP", "BDCL")


@dataclass(frozen=True)
class BDCLConfig:
    """Sizes and schedules of the BDCL chapter (``standard`` = field defaults)."""

    width: int = 16                 # channels of the first encoder layer
    projection_dim: int = 32        # contrastive embedding size
    representation_epochs: int = 40
    classifier_epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    temperature_lr: float = 1e-2    # TDL's temperatures move slowly at the network's rate
    temperature: float = 0.1        # SupCon temperature; TDL's initial value
    min_temperature: float = 0.02   # TDL's floor: tau_c = min + softplus(theta_c)
    focal_gamma: float = 2.0
    prototype_momentum: float = 0.9
    hard_fraction: float = 0.5      # share of a class's batch samples that count as hard

    PRESETS = {
        "quick": {"width": 8, "projection_dim": 16, "representation_epochs": 4, "classifier_epochs": 4},
        "paper": {"width": 32, "projection_dim": 128, "representation_epochs": 100, "classifier_epochs": 30},
    }


# ---------------------------------------------------------------- losses


def focal_loss(logits: Tensor, labels: Tensor, gamma: float = 2.0) -> Tensor:
    """Multi-class focal loss (Lin et al. 2017), mean of -(1 - p_t)^gamma log p_t.
    logits (B, C), labels (B,) -> scalar."""
    log_p_t = F.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    return (-(1.0 - log_p_t.exp()).pow(gamma) * log_p_t).mean()


def supervised_contrastive_terms(
    features: Tensor, labels: Tensor, temperature: float | Tensor,
    extra_keys: Tensor | None = None, extra_labels: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-anchor SupCon losses L_i (B,) and the mask (B,) of anchors with a positive.

    features (B, d) L2-normalised; labels (B,); temperature a float or a (B,) tensor
    (one per anchor); extra_keys (K, d) with extra_labels (K,): keys that are not
    anchors (BDCL's prototypes). L_i is 0 where anchor i has no positive.
    """
    keys = features if extra_keys is None else torch.cat([features, extra_keys])
    key_labels = labels if extra_labels is None else torch.cat([labels, extra_labels])
    tau = torch.as_tensor(temperature, dtype=features.dtype)
    tau = tau.expand(len(features)) if tau.ndim == 0 else tau
    logits = features @ keys.T / tau[:, None]
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[:, : len(features)] = torch.eye(len(features), dtype=torch.bool)
    logits = logits.masked_fill(is_self, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == key_labels[None, :]) & ~is_self
    n_positive = positive.sum(1)
    per_anchor = -log_prob.masked_fill(~positive, 0.0).sum(1) / n_positive.clamp(min=1)
    return per_anchor, n_positive > 0


def supervised_contrastive_loss(
    features: Tensor, labels: Tensor, temperature: float | Tensor,
    extra_keys: Tensor | None = None, extra_labels: Tensor | None = None,
) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L^sup_out): the mean of L_i
    over anchors with at least one positive (see the module docstring).

    Anchors without a positive (a class with one sample in the batch) are left out
    of the mean; with no such anchor at all the loss is 0 (still differentiable).
    """
    per_anchor, has_positive = supervised_contrastive_terms(features, labels, temperature, extra_keys, extra_labels)
    if not bool(has_positive.any()):
        return features.sum() * 0.0
    return per_anchor[has_positive].mean()


class ClassTemperatures(nn.Module):
    """TDL's learnable per-class temperatures tau_c = tau_min + softplus(theta_c) (C,),
    positive for any theta; initialised to ``initial``."""

    def __init__(self, num_classes: int, initial: float, minimum: float):
        super().__init__()
        if not initial > minimum > 0:
            raise ValueError(f"need initial > minimum > 0, got initial={initial}, minimum={minimum}")
        self.minimum = minimum
        theta = math.log(math.expm1(initial - minimum))  # softplus^-1
        self.theta = nn.Parameter(torch.full((num_classes,), theta))

    def forward(self) -> Tensor:
        return self.minimum + F.softplus(self.theta)


def update_hard_example_prototypes(
    prototypes: Tensor, ready: Tensor, features: Tensor, labels: Tensor, hardness: Tensor,
    momentum: float, hard_fraction: float,
) -> tuple[Tensor, Tensor]:
    """HEP's update: for each class c present in the batch, take its ceil(hard_fraction
    * n_c) samples with the highest ``hardness``, average their features h_c and set

        p_c <- normalise(m p_c + (1 - m) h_c)   (p_c <- normalise(h_c) the first time).

    prototypes (C, d), ready (C,) bool (has p_c been set), features (B, d), labels (B,),
    hardness (B,). Returns the new (prototypes, ready); inputs are not modified.
    """
    prototypes, ready = prototypes.clone(), ready.clone()
    features, hardness = features.detach(), hardness.detach()
    for c in labels.unique().tolist():
        members = torch.nonzero(labels == c).flatten()
        n_hard = max(1, math.ceil(hard_fraction * len(members)))
        hard = members[torch.argsort(hardness[members], descending=True, stable=True)[:n_hard]]
        mean = features[hard].mean(0)
        blended = momentum * prototypes[c] + (1.0 - momentum) * mean if ready[c] else mean
        prototypes[c] = F.normalize(blended, dim=0)
        ready[c] = True
    return prototypes, ready


class BDCLLoss(nn.Module):
    """BDCL's loss with switches for the ablation; with both off it is SupCon.

    ``forward(features (B, d) normalised, labels (B,))`` -> scalar. In training mode
    each call then updates the prototypes from the batch (hardness = the per-anchor
    loss, detached; anchors without a positive count as hardest, since nothing in the
    batch pulls them towards their class).
    """

    def __init__(self, num_classes: int, feature_dim: int, temperature: float = 0.1,
                 min_temperature: float = 0.02, use_tdl: bool = True, use_hep: bool = True,
                 momentum: float = 0.9, hard_fraction: float = 0.5):
        super().__init__()
        self.use_tdl, self.use_hep = use_tdl, use_hep
        self.temperature, self.momentum, self.hard_fraction = temperature, momentum, hard_fraction
        self.class_temperatures = ClassTemperatures(num_classes, temperature, min_temperature) if use_tdl else None
        self.register_buffer("prototypes", torch.zeros(num_classes, feature_dim))
        self.register_buffer("prototype_ready", torch.zeros(num_classes, dtype=torch.bool))

    def anchor_temperatures(self, labels: Tensor) -> Tensor:
        """(B,) temperature of each anchor: tau_{y_i} with TDL, else the fixed one."""
        if self.class_temperatures is None:
            return torch.full(labels.shape, self.temperature)
        return self.class_temperatures()[labels]

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        extra_keys = extra_labels = None
        if self.use_hep and bool(self.prototype_ready.any()):
            extra_labels = torch.nonzero(self.prototype_ready).flatten()
            extra_keys = self.prototypes[extra_labels]
        per_anchor, has_positive = supervised_contrastive_terms(
            features, labels, self.anchor_temperatures(labels), extra_keys, extra_labels)
        if self.use_hep and self.training:
            hardness = per_anchor.detach().masked_fill(~has_positive, float("inf"))
            self.prototypes, self.prototype_ready = update_hard_example_prototypes(
                self.prototypes, self.prototype_ready, features, labels, hardness, self.momentum, self.hard_fraction)
        if not bool(has_positive.any()):
            return features.sum() * 0.0
        return per_anchor[has_positive].mean()


# ---------------------------------------------------------------- model and training


class CandidateNet(nn.Module):
    """Small CNN on candidate patches (B, C_in, S, S) with S divisible by 8.

    ``embed``: (B, 4w) backbone features; ``project``: (B, projection_dim) normalised
    contrastive embedding; ``classifier``: linear, (B, num_classes) logits.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, projection_dim: int):
        super().__init__()
        w = width
        layers: list[nn.Module] = []
        for c_in, c_out in ((in_channels, w), (w, 2 * w), (2 * w, 4 * w)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(True), nn.MaxPool2d(2)]
        self.backbone = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(4 * w, 4 * w), nn.ReLU(True), nn.Linear(4 * w, projection_dim))
        self.classifier = nn.Linear(4 * w, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def project(self, x: Tensor) -> Tensor:
        return F.normalize(self.head(self.embed(x)), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))


def augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """A random element of the dihedral group of the square (flips, 90-degree
    rotations) per patch, the same on all channels. (B, C, S, S) -> same."""
    out = x.clone()
    k = torch.randint(0, 4, (len(x),), generator=generator)
    flip = torch.randint(0, 2, (len(x),), generator=generator).bool()
    for rot in range(4):
        for f in (False, True):
            sel = (k == rot) & (flip == f)
            if sel.any():
                view = x[sel].flip(-1) if f else x[sel]
                out[sel] = torch.rot90(view, rot, dims=(-2, -1))
    return out


def class_balanced_indices(labels: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """n indices drawn with replacement so that every class present is equally likely:
    P(i) = 1 / (n_classes_present * n_{y_i})."""
    counts = torch.bincount(labels)
    weights = 1.0 / counts[labels].double()
    return torch.multinomial(weights, n, replacement=True, generator=generator)


@dataclass
class TrainedClassifier:
    """A two-stage-trained candidate classifier and its per-epoch history."""

    net: CandidateNet
    variant: str
    history: dict[str, list[float]] = field(default_factory=dict)
    temperatures: NDArray[np.float64] | None = None  # learned tau_c (TDL variants)

    @torch.no_grad()
    def predict(self, patches: Tensor, batch_size: int = 256) -> NDArray[np.int64]:
        self.net.eval()
        logits = torch.cat([self.net(patches[c]) for c in torch.arange(len(patches)).split(batch_size)])
        return logits.argmax(1).numpy().astype(np.int64)


def _make_stage1_loss(variant: str, num_classes: int, config: BDCLConfig) -> tuple[nn.Module | None, bool]:
    """(contrastive loss module or None for CE/focal, whether it is contrastive)."""
    if variant not in LOSS_VARIANTS:
        raise ValueError(f"unknown loss variant {variant!r}; choose one of {LOSS_VARIANTS}")
    if variant in ("CE", "Focal"):
        return None, False
    flags = {"SupCon": (False, False), "BDCL w/o TDL": (False, True),
             "BDCL w/o HEP": (True, False), "BDCL": (True, True)}[variant]
    loss = BDCLLoss(num_classes, config.projection_dim, config.temperature, config.min_temperature,
                    use_tdl=flags[0], use_hep=flags[1], momentum=config.prototype_momentum,
                    hard_fraction=config.hard_fraction)
    return loss, True


def train_two_stage(patches: Tensor, labels: Tensor, num_classes: int, variant: str, config: BDCLConfig,
                    seed: int = 0, progress: bool = True) -> TrainedClassifier:
    """Stage 1 with ``variant``'s loss, then class-balanced linear re-training on frozen
    features. patches (N, C_in, S, S) float, labels (N,) int64 in [0, num_classes)."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    net = CandidateNet(patches.shape[1], num_classes, config.width, config.projection_dim)
    contrastive, is_contrastive = _make_stage1_loss(variant, num_classes, config)
    groups = [{"params": list(net.parameters()), "lr": config.lr}]
    if contrastive is not None and list(contrastive.parameters()):
        groups.append({"params": list(contrastive.parameters()), "lr": config.temperature_lr})
    optimizer = torch.optim.Adam(groups)
    history: dict[str, list[float]] = {"stage1_loss": [], "stage2_loss": []}
    supervised: Callable[[Tensor, Tensor], Tensor] = (
        (lambda lo, y: focal_loss(lo, y, config.focal_gamma)) if variant == "Focal" else F.cross_entropy)
    net.train()
    for _ in tqdm(range(config.representation_epochs), desc=f"{variant}: representation", disable=not progress):
        total, batches = 0.0, torch.randperm(len(patches), generator=rng).split(config.batch_size)
        for index in batches:
            x, y = patches[index], labels[index]
            if is_contrastive:
                # Two augmented views of each candidate: each anchor has at least its twin as a positive.
                views = torch.cat([augment(x, rng), augment(x, rng)])
                loss = contrastive(net.project(views), torch.cat([y, y]))
            else:
                loss = supervised(net(augment(x, rng)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        history["stage1_loss"].append(total / len(batches))

    # Stage 2: frozen backbone (batch-norm statistics too), fresh linear classifier, balanced batches.
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    net.classifier = nn.Linear(net.classifier.in_features, num_classes)
    optimizer = torch.optim.Adam(net.classifier.parameters(), lr=config.lr * 10)
    n_batches = max(1, math.ceil(len(patches) / config.batch_size))
    for _ in tqdm(range(config.classifier_epochs), desc=f"{variant}: balanced classifier", disable=not progress):
        total = 0.0
        for _ in range(n_batches):
            index = class_balanced_indices(labels, config.batch_size, rng)
            with torch.no_grad():
                features = net.embed(augment(patches[index], rng))
            loss = F.cross_entropy(net.classifier(features), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        history["stage2_loss"].append(total / n_batches)
    temps = None
    if isinstance(contrastive, BDCLLoss) and contrastive.class_temperatures is not None:
        temps = contrastive.class_temperatures().detach().numpy().astype(np.float64)
    return TrainedClassifier(net, variant, history, temps)


# ---------------------------------------------------------------- metrics


def confusion_matrix(y_true: NDArray[np.integer], y_pred: NDArray[np.integer], num_classes: int) -> NDArray[np.int64]:
    """(C, C) counts, rows = true class, columns = predicted class."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def _supported(cm: NDArray[np.int64]) -> NDArray[np.bool_]:
    support = cm.sum(1) > 0
    if not support.any():
        raise ValueError("no samples")
    return support


def accuracy(cm: NDArray[np.int64]) -> float:
    """Share of correct predictions: trace / total."""
    return float(np.trace(cm) / max(1, cm.sum()))


def per_class_recall(cm: NDArray[np.int64]) -> NDArray[np.float64]:
    """Recall TP_c / (TP_c + FN_c) of each class (C,); NaN for a class absent from y_true."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(cm) / cm.sum(1)


def g_mean(cm: NDArray[np.int64]) -> float:
    """Geometric mean of the per-class recalls of the classes present in y_true."""
    recall = per_class_recall(cm)[_supported(cm)]
    return float(np.prod(recall) ** (1.0 / len(recall)))


def macro_f1(cm: NDArray[np.int64]) -> float:
    """Unweighted mean over the classes present in y_true of F1_c = 2 TP / (2 TP + FP + FN)
    (F1_c = 0 when the class is never predicted correctly)."""
    tp = np.diag(cm).astype(np.float64)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    return float(f1[_supported(cm)].mean())


def index_of_balanced_accuracy(tpr: float | NDArray[np.float64], tnr: float | NDArray[np.float64],
                               alpha: float = 0.1) -> float | NDArray[np.float64]:
    """IBA (García, Mollineda & Sánchez, IbPRIA 2009), binary:
    IBA_alpha = (1 + alpha (TPR - TNR)) * Gmean^2, Gmean^2 = TPR * TNR."""
    return (1.0 + alpha * (tpr - tnr)) * tpr * tnr


def multiclass_iba(cm: NDArray[np.int64], alpha: float = 0.1) -> float:
    """Multi-class IBA: the unweighted mean over classes present in y_true of the
    one-vs-rest binary IBA, with TPR_c = recall of c and TNR_c = TN_c / (TN_c + FP_c)
    (the one-vs-rest convention of imbalanced-learn's ``classification_report_imbalanced``,
    here macro-averaged so that every class counts the same)."""
    total = cm.sum()
    tp = np.diag(cm).astype(np.float64)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    tn = total - tp - fp - fn
    supported = _supported(cm)
    tpr = tp[supported] / (tp + fn)[supported]
    # A class that is the whole test set has no negatives: its TNR is vacuously 1.
    tnr = np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), 1.0)[supported]
    return float(np.mean(index_of_balanced_accuracy(tpr, tnr, alpha)))


def classification_metrics(y_true: NDArray[np.integer], y_pred: NDArray[np.integer], num_classes: int,
                           alpha: float = 0.1) -> dict[str, float]:
    """The paper's four metrics: accuracy, G-mean, macro F1, IBA (alpha = 0.1)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    return {"accuracy": accuracy(cm), "g_mean": g_mean(cm), "macro_f1": macro_f1(cm), "iba": multiclass_iba(cm, alpha)}


def run_ablation(train_patches: Tensor, train_labels: Tensor, test_patches: Tensor, test_labels: Tensor,
                 num_classes: int, config: BDCLConfig, variants: tuple[str, ...] = LOSS_VARIANTS, seed: int = 0,
                 progress: bool = True) -> tuple[list[dict[str, object]], dict[str, TrainedClassifier]]:
    """Train every variant with the same seed and data; one row of the four metrics
    (and the method name) per variant, in the order of ``variants``."""
    rows: list[dict[str, object]] = []
    models: dict[str, TrainedClassifier] = {}
    for variant in variants:
        model = train_two_stage(train_patches, train_labels, num_classes, variant, config, seed, progress)
        prediction = model.predict(test_patches)
        rows.append({"method": variant, **classification_metrics(test_labels.numpy(), prediction, num_classes)})
        models[variant] = model
    return rows, models
