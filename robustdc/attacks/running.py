"""Running an attack spec on a model: :func:`run_attack` and :class:`AttackOutput`.

:func:`run_attack` does what must hold for every library:

- The model is in eval mode during the attack, and every submodule gets its previous
  mode back afterwards.
- The parameters' ``requires_grad`` flags and ``.grad`` tensors are left as they were.
- Torch's random generator is seeded before each batch, and the caller's generator
  state is restored afterwards.
- Library exceptions become :class:`AttackError`.

It does not check the result against the threat model (``x_adv`` within ``epsilon``
and inside [0, 1]); the evaluation harness does that with
:func:`perturbation_norms`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustdc.attacks.errors import AttackError
from robustdc.attacks.prepared import PreparedAttack
from robustdc.attacks.spec import AttackSpec

logger = logging.getLogger(__name__)

_ADAPTERS = {
    "torchattacks": "robustdc.attacks.torchattacks_adapter",
    "foolbox": "robustdc.attacks.foolbox_adapter",
}


@dataclass
class AttackOutput:
    """Result of :func:`run_attack`.

    Attributes:
        x_adv: float32 (N, C, H, W) adversarial images on the CPU, as the library
            returned them.
        per_sample_l2: float64 (N,) L2 norms of ``x_adv - x``.
        per_sample_linf: float64 (N,) Linf norms of ``x_adv - x``.
        success: bool (N,) per-sample success as the library reported it (foolbox
            only), else ``None``. For a minimum-norm attack an image with ``False``
            was not fooled and its ``x_adv`` is whatever the library ended with
            (foolbox's Carlini-Wagner returns an all-zero image), so its norms are
            meaningless.
        info: JSON-serializable record: ``attack``, ``label``, ``spec`` (the spec's
            ``to_dict()``), ``library``, ``library_version``, ``class``, ``settings``
            (read back from the library object), ``components`` for composite
            attacks, ``batch_size``, ``seed``, ``device``, ``num_classes``,
            ``n_examples`` and ``n_library_success``.
        seconds: wall-clock time of the attack, batches and setup included.
    """

    x_adv: torch.Tensor
    per_sample_l2: torch.Tensor
    per_sample_linf: torch.Tensor
    success: torch.Tensor | None
    info: dict[str, Any]
    seconds: float


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the per-sample L2 and Linf norms of ``x_adv - x``, in float64.

    The difference is taken in float64, so it is exact for float32 inputs.

    Args:
        x: (N, ...) original images.
        x_adv: adversarial images of the same shape.

    Returns:
        ``(l2, linf)``, each of shape (N,) on ``x``'s device.
    """
    if x.shape != x_adv.shape:
        raise ValueError(
            f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}"
        )
    delta = (x_adv.detach().to(x.device, torch.float64) - x.detach().double()).flatten(1)
    return delta.norm(p=2, dim=1), delta.abs().amax(dim=1)


def run_attack(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: AttackSpec,
    *,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> AttackOutput:
    """Attack ``model`` on ``images`` with the library named by ``spec``.

    Args:
        model: classifier mapping images in [0, 1] to logits. It stays on its device.
        images: (N, C, H, W) float images in [0, 1], or uint8 images in 0..255,
            which are divided by 255.
        labels: (N,) integer true labels.
        spec: the attack, from :func:`~robustdc.attacks.make_spec`.
        batch_size: images per library call.
        seed: ``torch.manual_seed(seed)`` runs before every batch, and the attacks
            that take a seed (APGD, APGD-T, FAB, Square) get it too, so a run is
            reproducible for the same seed, batch size and device.
        device: where to attack; ``None`` means the model's device. It must be the
            model's device.

    Returns:
        An :class:`AttackOutput` with ``x_adv`` on the CPU.

    Raises:
        ValueError: invalid images, labels, batch size or device.
        TypeError: a spec that is not an :class:`AttackSpec`, or images or labels
            of an unsupported dtype.
        AttackError: the library failed; the message names the attack and the
            library class.
    """
    if not isinstance(spec, AttackSpec):
        raise TypeError(f"spec must be an AttackSpec from make_spec(), got {spec!r}")
    x = _check_images(images)
    y = _check_labels(labels, len(x))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    run_device = _check_device(model, device)
    adapter = importlib.import_module(_ADAPTERS[spec.library])

    start = time.perf_counter()
    with _attack_state(model, run_device):
        torch.manual_seed(seed)
        num_classes = _count_classes(model, x[:1].to(run_device))
        prepared = _prepare(adapter, model, spec, num_classes, run_device, seed)
        x_adv, success = _run_batches(prepared, spec, x, y, batch_size, seed, run_device)
    seconds = time.perf_counter() - start

    l2, linf = perturbation_norms(x, x_adv)
    info: dict[str, Any] = {
        "attack": spec.name,
        "label": spec.label,
        "spec": spec.to_dict(),
        **prepared.info,
        "batch_size": batch_size,
        "seed": seed,
        "device": str(run_device),
        "num_classes": num_classes,
        "n_examples": len(x),
        "n_library_success": None if success is None else int(success.sum()),
    }
    logger.info("%s on %d images took %.1f s", spec.label, len(x), seconds)
    return AttackOutput(
        x_adv=x_adv,
        per_sample_l2=l2,
        per_sample_linf=linf,
        success=success,
        info=info,
        seconds=seconds,
    )


def _check_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"images must have shape (N, C, H, W) with N >= 1, got {tuple(images.shape)}"
        )
    if images.dtype == torch.uint8:
        x = images.detach().to("cpu", torch.float32) / 255.0
    elif images.is_floating_point():
        x = images.detach().to("cpu", torch.float32).clone()
    else:
        raise TypeError(f"images must be floating point in [0, 1] or uint8, got {images.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or infinite values")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        raise ValueError(
            f"images must be in [0, 1], got values in [{low:.4g}, {high:.4g}]; "
            "models normalize internally, so pass unnormalized images"
        )
    return x


def _check_labels(labels: torch.Tensor, count: int) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integers, got {labels.dtype}")
    if labels.shape != (count,):
        raise ValueError(f"labels must have shape ({count},), got {tuple(labels.shape)}")
    return labels.detach().to("cpu", torch.int64)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def _check_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    model_device = _model_device(model)
    if device is None:
        return model_device
    requested = torch.device(device)
    if requested.type == "cuda" and requested.index is None and model_device.type == "cuda":
        requested = model_device
    if requested != model_device:
        raise ValueError(
            f"model is on {model_device} but device={str(requested)!r} was requested; "
            f"move the model first with model.to({str(requested)!r})"
        )
    return requested


@contextlib.contextmanager
def _attack_state(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Put ``model`` in eval mode with frozen parameters, then restore both and the RNG.

    Freezing the parameters keeps libraries that call ``backward()`` (torchattacks'
    CW and DeepFool) from accumulating into the parameters' ``.grad``.
    """
    modules = list(model.modules())
    modes = [module.training for module in modules]
    parameters = list(model.parameters())
    requires_grad = [parameter.requires_grad for parameter in parameters]
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        try:
            model.eval()
            for parameter in parameters:
                parameter.requires_grad_(False)
            yield
        finally:
            for module, mode in zip(modules, modes, strict=True):
                module.training = mode
            for parameter, flag in zip(parameters, requires_grad, strict=True):
                parameter.requires_grad_(flag)


def _count_classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        logits = model(x)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"model must return logits of shape (N, classes) with at least 2 classes, "
            f"got {tuple(logits.shape)}"
        )
    return int(logits.shape[1])


def _prepare(
    adapter: Any,
    model: nn.Module,
    spec: AttackSpec,
    num_classes: int,
    device: torch.device,
    seed: int,
) -> PreparedAttack:
    try:
        return adapter.prepare(model, spec, num_classes=num_classes, device=device, seed=seed)
    except Exception as err:
        raise AttackError(
            f"{spec.label}: building the {spec.library} attack failed: {err}"
        ) from err


def _run_batches(
    prepared: PreparedAttack,
    spec: AttackSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    adv_batches: list[torch.Tensor] = []
    success_batches: list[torch.Tensor] = []
    for start in range(0, len(x), batch_size):
        x_batch = x[start : start + batch_size].to(device)
        y_batch = y[start : start + batch_size].to(device)

        torch.manual_seed(seed)
        try:
            x_adv, success = prepared.run_batch(x_batch, y_batch)
        except Exception as err:
            raise AttackError(
                f"{spec.label} ({prepared.info['class']}) failed on images "
                f"{start}..{start + len(x_batch) - 1}: {type(err).__name__}: {err}"
            ) from err

        if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x_batch.shape:
            shape = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv)
            raise AttackError(
                f"{spec.label} ({prepared.info['class']}) returned {shape}, "
                f"expected a tensor of shape {tuple(x_batch.shape)}"
            )
        adv_batches.append(x_adv.detach().to("cpu", torch.float32))
        if success is not None:
            success_batches.append(success.detach().to("cpu", torch.bool))

    success_all = torch.cat(success_batches) if success_batches else None
    return torch.cat(adv_batches), success_all
