# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Training of the autoencoder on normalised reference images.

The images arrive already normalised and finite (``astro_aeqa._preprocessing``
does that); this module only sees float32 arrays. Each image is tiled into a
grid of ``patch_size`` patches, a fraction of which is held out for
validation; training draws random crops, flips and 90-degree rotations from
the rest, never overlapping a held-out patch.

The loss is the weighted mean squared error (Jia et al. 2024, eq. 1),
``sum(w * (x - x_hat)**2) / sum(w)``. Optimiser: Adam. Learning-rate
schedule: `~torch.optim.lr_scheduler.ReduceLROnPlateau` on the validation
loss (factor 0.5), chosen over a cosine schedule because it does not depend on
``n_epochs``, so a run can be resumed with more epochs. Early stopping after
``patience`` epochs without improvement restores the best weights.
"""

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..utils import atomic_write, check_fraction, check_int
from ..utils import progress_bar as _progress_bar
from .model import ConvAutoencoder
from .reconstructor import resolve_device

__all__ = [
    "TrainingHistory",
    "split_patches",
    "weighted_mse_loss",
    "train_autoencoder",
]

log = logging.getLogger(__name__)

_CHECKPOINT_FORMAT = "astro_aeqa-checkpoint"
_CHECKPOINT_VERSION = 1


@dataclass
class TrainingHistory:
    """
    What happened during `train_autoencoder`.

    Attributes
    ----------
    train_loss, val_loss : list of float
        Mean training loss and validation loss of each epoch.
    learning_rate : list of float
        Learning rate used in each epoch.
    best_epoch : int
        Index (from 0) of the epoch with the lowest validation loss; its
        weights are the ones left in the model.
    stopped_early : bool
        Whether early stopping ended the run before ``n_epochs``.
    n_train_patches, n_val_patches : int
        Number of training grid patches and of held-out validation patches.
    seconds : float
        Wall-clock time of training (summed over resumed runs).
    val_patches : list of (int, int, int)
        ``(image index, y0, x0)`` of the held-out patches.
    """

    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    learning_rate: list = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    n_train_patches: int = 0
    n_val_patches: int = 0
    seconds: float = 0.0
    val_patches: list = field(default_factory=list)

    @property
    def n_epochs(self):
        """Number of epochs run."""
        return len(self.train_loss)

    def to_dict(self):
        """Return a JSON-safe dictionary."""
        d = asdict(self)
        d["val_patches"] = [list(map(int, p)) for p in self.val_patches]
        return d

    @classmethod
    def from_dict(cls, d):
        """Inverse of `to_dict`."""
        d = dict(d)
        d["val_patches"] = [tuple(p) for p in d.get("val_patches", [])]
        return cls(**d)


def split_patches(shapes, patch_size, *, val_fraction=0.1, seed=0):
    """
    Tile images into a grid of patches and hold out some for validation.

    Parameters
    ----------
    shapes : list of (int, int)
        ``(ny, nx)`` of each image.
    patch_size : int
        Side of the square patches.
    val_fraction : float
        Fraction of the grid patches held out (at least one).
    seed : int
        Seed of the random choice.

    Returns
    -------
    train_regions : `~numpy.ndarray`
        Integer array of shape ``(n_regions, 5)``; each row
        ``(image index, y_lo, y_hi, x_lo, x_hi)`` is a box of allowed crop
        corners (inclusive): a crop ``[y:y + patch_size, x:x + patch_size]``
        with its corner in any box overlaps no held-out patch.
    val_patches : list of (int, int, int)
        ``(image index, y0, x0)`` of the held-out patches.

    Raises
    ------
    ValueError
        If an image is smaller than ``patch_size``, or nothing is left to
        train on.

    Examples
    --------
    >>> from astro_aeqa.nn import split_patches
    >>> regions, val = split_patches([(128, 128)], 32, val_fraction=0.25, seed=1)
    >>> len(val)
    4
    """
    ps = check_int(patch_size, "patch_size", minimum=1)
    val_fraction = check_fraction(val_fraction, "val_fraction")
    grid = []
    for i, shape in enumerate(shapes):
        ny, nx = (int(s) for s in shape)
        if ny < ps or nx < ps:
            msg = (
                f"images[{i}] has shape {(ny, nx)}, smaller than patch_size={ps};"
                " use a smaller patch_size"
            )
            raise ValueError(msg)
        grid.append((ny // ps, nx // ps))
    n_total = sum(gy * gx for gy, gx in grid)
    if n_total < 2:
        msg = (
            f"the images hold only {n_total} patch of {ps} pixels: need at least 2 "
            "(one for validation)"
        )
        raise ValueError(msg)
    n_val = min(max(1, round(val_fraction * n_total)), n_total - 1)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n_total, size=n_val, replace=False))
    offsets = np.cumsum([0] + [gy * gx for gy, gx in grid])
    val_patches = []
    regions = []
    for i, (gy, gx) in enumerate(grid):
        held = np.zeros((gy + 1, gx + 1), dtype=bool)  # a spare row/column of False
        sel = chosen[(chosen >= offsets[i]) & (chosen < offsets[i + 1])] - offsets[i]
        ky, kx = np.divmod(sel, gx)
        held[ky, kx] = True
        val_patches += [(i, int(a) * ps, int(b) * ps) for a, b in zip(ky, kx, strict=True)]
        ny, nx = shapes[i]
        y_max, x_max = int(ny) - ps, int(nx) - ps
        # a crop whose corner lies in cell (cy, cx) touches grid patch (cy, cx), and
        # (cy + 1, .) / (., cx + 1) when the corner can move off the grid line
        for cy in range(y_max // ps + 1):
            y_lo = cy * ps
            y_hi = min(y_lo + ps - 1, y_max)
            rows = held[cy : cy + 2] if y_hi > y_lo else held[cy : cy + 1]
            for cx in range(x_max // ps + 1):
                x_lo = cx * ps
                x_hi = min(x_lo + ps - 1, x_max)
                touched = rows[:, cx : cx + 2] if x_hi > x_lo else rows[:, cx : cx + 1]
                if not touched.any():
                    regions.append((i, y_lo, y_hi, x_lo, x_hi))
                elif not held[cy, cx]:
                    regions.append((i, y_lo, y_lo, x_lo, x_lo))  # only the grid patch itself
    return np.asarray(regions, dtype=np.int64).reshape(-1, 5), val_patches


def _check_images(images, weights, patch_size, multiple):
    if isinstance(images, np.ndarray) and images.ndim == 2:
        images = [images]
    images = [np.ascontiguousarray(img, dtype=np.float32) for img in images]
    if not images:
        msg = "images is empty: pass at least one normalised reference image"
        raise ValueError(msg)
    if patch_size % multiple:
        msg = f"patch_size={patch_size} must be a multiple of {multiple} for this model"
        raise ValueError(msg)
    for i, img in enumerate(images):
        if img.ndim != 2:
            msg = f"images[{i}] must be a 2-D array, got shape {img.shape}"
            raise ValueError(msg)
        n_bad = img.size - int(np.count_nonzero(np.isfinite(img)))
        if n_bad:
            msg = (
                f"images[{i}] has {n_bad} non-finite (NaN or inf) pixels;"
                " fill them before training "
                "and give them weight 0"
            )
            raise ValueError(msg)
    if weights is None:
        return images, None
    if isinstance(weights, np.ndarray) and weights.ndim == 2:
        weights = [weights]
    weights = [np.ascontiguousarray(w, dtype=np.float32) for w in weights]
    if len(weights) != len(images):
        msg = (
            f"weights has {len(weights)} arrays but images has {len(images)};"
            " pass one weight map per image"
        )
        raise ValueError(msg)
    for i, (w, img) in enumerate(zip(weights, images, strict=True)):
        if w.shape != img.shape:
            msg = f"weights[{i}] has shape {w.shape} but images[{i}] has shape {img.shape}"
            raise ValueError(msg)
        if not np.all((w >= 0) & (w <= 1)):  # also False for NaN
            msg = f"weights[{i}] must lie in [0, 1] (0 = invalid pixel) and be finite"
            raise ValueError(msg)
    if not any(np.any(w > 0) for w in weights):
        msg = "weights are zero everywhere: no pixel would count in the loss; check the masks"
        raise ValueError(msg)
    return images, weights


def _sample_batch(images, weights, regions, cum_area, rng, batch_size, ps):
    """Random crops, flips and 90-degree rotations; returns (x, w) float32 arrays (n, 1, ps, ps)."""
    idx = np.searchsorted(cum_area, rng.random(batch_size) * cum_area[-1], side="right")
    reg = regions[idx]
    ys = rng.integers(reg[:, 1], reg[:, 2] + 1)
    xs = rng.integers(reg[:, 3], reg[:, 4] + 1)
    ks = rng.integers(0, 4, batch_size)
    flips = rng.random(batch_size) < 0.5
    x = np.empty((batch_size, 1, ps, ps), dtype=np.float32)
    w = None if weights is None else np.empty_like(x)
    for j in range(batch_size):
        i, y0, x0 = reg[j, 0], ys[j], xs[j]
        sl = (slice(y0, y0 + ps), slice(x0, x0 + ps))
        x[j, 0] = _augment(images[i][sl], flips[j], ks[j])
        if w is not None:
            w[j, 0] = _augment(weights[i][sl], flips[j], ks[j])
    return x, w


def _augment(a, flip, k):
    if flip:
        a = a[:, ::-1]
    return np.rot90(a, k)


def _amp_settings(device, amp):
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return None, False
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    if device.type == "cuda":
        return torch.float16, True
    return torch.bfloat16, False


def weighted_mse_loss(reconstruction, target, weights=None, *, weight_sum=None):
    """
    Weighted mean squared error, ``sum(w * (x_hat - x)**2) / sum(w)`` (Jia et al. 2024, eq. 1).

    Pixels of weight 0 do not count, whatever their values.

    Parameters
    ----------
    reconstruction, target : `torch.Tensor`
        Same shapes.
    weights : `torch.Tensor`, optional
        Same shape, in [0, 1]. Default: all ones (plain MSE).
    weight_sum : float, optional
        ``weights.sum()`` when the caller knows it already (saves a device
        synchronisation).

    Returns
    -------
    `torch.Tensor`
        Scalar float32 loss (NaN when all weights are zero).

    Examples
    --------
    >>> import torch
    >>> from astro_aeqa.nn import weighted_mse_loss
    >>> x = torch.zeros(1, 1, 2, 2)
    >>> y = torch.tensor([[[[1.0, 0.0], [0.0, 99.0]]]])
    >>> float(weighted_mse_loss(y, x, torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])))
    0.3333333432674408
    """
    sse = _weighted_sse(reconstruction, target, weights)
    if weight_sum is None:
        weight_sum = target.numel() if weights is None else weights.sum()
    return sse / weight_sum


def _weighted_sse(out, x, w):
    err = (out.float() - x.float()) ** 2
    if w is not None:
        err = torch.where(w > 0, err * w, 0.0)  # a NaN/inf under weight 0 stays out
    return err.sum()


def _validate(model, val_x, val_w, batch_size, amp_dtype, device):
    if val_w is not None:
        total_w = float(val_w.sum())
        if total_w == 0:
            return float("nan")
    else:
        total_w = float(val_x.numel())
    sse = torch.zeros((), device=device)
    with torch.inference_mode():
        for s in range(0, val_x.shape[0], batch_size):
            x = val_x[s : s + batch_size]
            w = None if val_w is None else val_w[s : s + batch_size]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = model(x)
            sse += _weighted_sse(out, x, w)
    return float(sse) / total_w


def train_autoencoder(
    model,
    images,
    *,
    weights=None,
    patch_size=64,
    n_epochs=20,
    batch_size=16,
    steps_per_epoch=None,
    learning_rate=1e-3,
    val_fraction=0.1,
    patience=5,
    lr_patience=None,
    seed=0,
    device="auto",
    amp=None,
    progress_bar=True,
    checkpoint=None,
    resume=False,
    transform=None,
):
    """
    Train ``model`` in place to reconstruct patches of ``images``.

    Parameters
    ----------
    model : ``ConvAutoencoder``
        The model; it is moved to ``device`` and left there, holding the
        weights of the best epoch.
    images : list of 2-D `~numpy.ndarray`
        Reference images, already normalised and finite everywhere.
    weights : list of 2-D `~numpy.ndarray`, optional
        Same shapes as ``images``, values in [0, 1]; pixels of weight 0 never
        count in the loss. A batch whose weights are all zero is skipped.
    patch_size : int
        Side of the training crops and validation patches; a multiple of
        the model's ``config.multiple``.
    n_epochs : int
        Maximum number of epochs (in total, counting a resumed checkpoint).
    batch_size : int
        Crops per optimiser step.
    steps_per_epoch : int, optional
        Optimiser steps per epoch. Default: the number of training grid
        patches divided by ``batch_size`` (at least 1).
    learning_rate : float
        Initial Adam learning rate; halved when the validation loss has not
        improved for ``lr_patience`` epochs (down to ``learning_rate / 1000``).
    val_fraction : float
        Fraction of the grid patches held out for validation (at least one).
    patience : int or None
        Stop after this many epochs without a better validation loss.
        `None` disables early stopping.
    lr_patience : int, optional
        Patience of the learning-rate schedule; default
        ``max(1, patience // 2)`` (2 when ``patience`` is None).
    seed : int
        Seed of the patch split, crops and augmentation (a private
        `numpy.random.Generator`). The initial weights come from the model
        (see `~astro_aeqa.nn.build_model`).
    device : str or `torch.device`
        See ``resolve_device``.
    amp : bool, optional
        Mixed precision: bfloat16 autocast (float16 with a gradient scaler on
        GPUs without bfloat16). Default: on for CUDA, off (float32) on CPU.
    progress_bar : bool
        Show a tqdm bar of the steps. Epoch losses are logged at INFO level.
    checkpoint : str or `~pathlib.Path`, optional
        After each epoch, atomically write the training state (weights, Adam
        state, epoch, history, random state) there as a ``.safetensors`` file
        with JSON metadata; nothing is pickled.
    resume : bool
        Continue from ``checkpoint`` when it exists. A resumed run ends with
        the same weights as an uninterrupted one.
    transform : callable, optional
        Applied to every batch of crops, shape ``(n, 1, ny, nx)``, before the
        model sees it (for example the paper's per-patch [0, 1] scaling).

    Returns
    -------
    `TrainingHistory`

    Raises
    ------
    ValueError
        If an image is not finite, shapes disagree, or a checkpoint was made
        with other settings.
    """
    if not isinstance(model, ConvAutoencoder):
        msg = f"model must be a ConvAutoencoder (see build_model), got {type(model).__name__}"
        raise TypeError(msg)
    ps = check_int(patch_size, "patch_size", minimum=4)
    n_epochs = check_int(n_epochs, "n_epochs", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if patience is not None:
        patience = check_int(patience, "patience", minimum=1)
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        msg = f"learning_rate must be finite and positive, got {learning_rate!r}"
        raise ValueError(msg)
    if resume and checkpoint is None:
        msg = "resume=True needs checkpoint=<path of the checkpoint file>"
        raise ValueError(msg)
    images, weights = _check_images(images, weights, ps, model.config.multiple)
    device = resolve_device(device)
    amp_dtype, use_scaler = _amp_settings(device, amp)

    shapes = [img.shape for img in images]
    regions, val_patches = split_patches(shapes, ps, val_fraction=val_fraction, seed=seed)
    n_val = len(val_patches)
    n_train = sum((ny // ps) * (nx // ps) for ny, nx in shapes) - n_val
    if steps_per_epoch is None:
        steps_per_epoch = max(1, n_train // batch_size)
    steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", minimum=1)
    area = (regions[:, 2] - regions[:, 1] + 1) * (regions[:, 4] - regions[:, 3] + 1)
    cum_area = np.cumsum(area.astype(np.float64))

    val_x = np.stack([images[i][y : y + ps, x : x + ps] for i, y, x in val_patches])[:, None]
    if transform is not None:
        val_x = np.ascontiguousarray(transform(val_x), dtype=np.float32)
    val_x = torch.from_numpy(val_x).to(device)
    val_w = None
    if weights is not None:
        val_w = np.stack([weights[i][y : y + ps, x : x + ps] for i, y, x in val_patches])[:, None]
        val_w = torch.from_numpy(val_w).to(device)

    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    if lr_patience is None:
        lr_patience = max(1, patience // 2) if patience is not None else 2
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.5, patience=lr_patience, min_lr=learning_rate * 1e-3
    )
    scaler = torch.amp.GradScaler(device.type) if use_scaler else None
    rng = np.random.default_rng(seed)
    history = TrainingHistory(
        n_train_patches=n_train, n_val_patches=n_val, val_patches=list(val_patches)
    )
    best_loss = float("inf")
    best_state = None

    settings = {
        "config": model.config.to_dict(),
        "shapes": [list(map(int, s)) for s in shapes],
        "weighted": weights is not None,
        "patch_size": ps,
        "batch_size": batch_size,
        "steps_per_epoch": steps_per_epoch,
        "learning_rate": float(learning_rate),
        "val_fraction": float(val_fraction),
        "lr_patience": lr_patience,
        "seed": int(seed),
    }
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
    if resume and checkpoint.exists():
        state = _load_checkpoint(checkpoint, model, optimizer, settings, device)
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        rng.bit_generator.state = state["rng"]
        history = TrainingHistory.from_dict(state["history"])
        best_loss = state["best_loss"]
        best_state = state["best_state"]
        log.info("resumed from %s after %d epochs", checkpoint, history.n_epochs)
    elif resume:
        log.info("no checkpoint at %s: starting from scratch", checkpoint)

    start_epoch = history.n_epochs
    done = history.stopped_early or start_epoch >= n_epochs
    bar = _progress_bar(
        enabled=progress_bar and not done,
        total=max(0, n_epochs - start_epoch) * steps_per_epoch,
        desc="training",
        unit="step",
    )
    t0 = time.perf_counter()
    try:
        for epoch in range(start_epoch, n_epochs if not done else start_epoch):
            model.train()
            lr = optimizer.param_groups[0]["lr"]
            running = torch.zeros((), device=device)
            n_done = 0
            for _ in range(steps_per_epoch):
                xb, wb = _sample_batch(images, weights, regions, cum_area, rng, batch_size, ps)
                if transform is not None:
                    xb = np.ascontiguousarray(transform(xb), dtype=np.float32)
                bar.update(1)
                if wb is not None:
                    w_sum = float(wb.sum())
                    if w_sum == 0:
                        continue
                    wt = torch.from_numpy(wb).to(device, non_blocking=True)
                    denom = w_sum
                else:
                    wt = None
                    denom = float(xb.size)
                xt = torch.from_numpy(xb).to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    out = model(xt)
                loss = weighted_mse_loss(out, xt, wt, weight_sum=denom)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                running += loss.detach()
                n_done += 1
            train_loss = float(running) / n_done if n_done else float("nan")
            model.eval()
            val_loss = _validate(model, val_x, val_w, batch_size, amp_dtype, device)
            monitored = val_loss if np.isfinite(val_loss) else train_loss
            if np.isfinite(monitored):
                scheduler.step(monitored)
            history.train_loss.append(train_loss)
            history.val_loss.append(val_loss)
            history.learning_rate.append(lr)
            if monitored < best_loss:
                best_loss = monitored
                history.best_epoch = epoch
                best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                }
            log.info(
                "epoch %d/%d: train loss %.5g, val loss %.5g, lr %.3g",
                epoch + 1,
                n_epochs,
                train_loss,
                val_loss,
                lr,
            )
            bar.set_postfix(epoch=epoch + 1, train=f"{train_loss:.4g}", val=f"{val_loss:.4g}")
            if patience is not None and epoch - history.best_epoch >= patience:
                history.stopped_early = True
                log.info(
                    "early stop: no improvement for %d epochs; best epoch %d",
                    patience,
                    history.best_epoch + 1,
                )
            t1 = time.perf_counter()
            history.seconds += t1 - t0
            t0 = t1
            if checkpoint is not None:
                _save_checkpoint(
                    checkpoint,
                    model,
                    optimizer,
                    scheduler,
                    scaler,
                    rng,
                    history,
                    best_loss,
                    best_state,
                    settings,
                )
            if history.stopped_early:
                break
    finally:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


# --- checkpoints: safetensors tensors + JSON metadata, never pickle ---------


def _save_checkpoint(
    path, model, optimizer, scheduler, scaler, rng, history, best_loss, best_state, settings
):
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v.contiguous() for k, v in best_state.items()})
    opt = optimizer.state_dict()
    for pid, pstate in opt["state"].items():
        for key, value in pstate.items():
            if not torch.is_tensor(value):
                value = torch.tensor(value)
            tensors[f"optim.{pid}.{key}"] = value.detach().contiguous().cpu()
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in opt["param_groups"]
    ]
    meta = {
        "format": _CHECKPOINT_FORMAT,
        "format_version": str(_CHECKPOINT_VERSION),
        "settings": json.dumps(settings),
        "param_groups": json.dumps(groups),
        "scheduler": json.dumps(scheduler.state_dict()),
        "scaler": json.dumps(scaler.state_dict() if scaler is not None else None),
        "rng": json.dumps(rng.bit_generator.state),
        "history": json.dumps(history.to_dict()),
        "best_loss": json.dumps(best_loss),
    }
    with atomic_write(path, overwrite=True) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _load_checkpoint(path, model, optimizer, settings, device):
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        msg = f"{path}: not a readable training checkpoint ({exc}); delete it or pass resume=False"
        raise ValueError(msg) from exc
    if meta.get("format") != _CHECKPOINT_FORMAT:
        msg = (
            f"{path}: not an astro_aeqa training checkpoint;"
            " pass another checkpoint path or resume=False"
        )
        raise ValueError(msg)
    saved = json.loads(meta["settings"])
    diff = sorted(k for k in settings if saved.get(k) != settings[k])
    if diff:
        msg = (
            f"{path}: the checkpoint was made with other settings ({', '.join(diff)} differ); "
            "resume with the same images and options, or start a new checkpoint"
        )
        raise ValueError(msg)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    model.to(device)
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    opt_state = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[key] = v
    groups = json.loads(meta["param_groups"])
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    return {
        "scheduler": json.loads(meta["scheduler"]),
        "scaler": json.loads(meta["scaler"]),
        "rng": json.loads(meta["rng"]),
        "history": json.loads(meta["history"]),
        "best_loss": json.loads(meta["best_loss"]),
        "best_state": best or None,
    }
