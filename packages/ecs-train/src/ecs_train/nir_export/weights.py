"""Weights and biases as they go into a NIR file: quantized and pruned values exactly."""

from __future__ import annotations

import numpy as np
import torch

from ecs_common.formats import FixedPointFormat
from ecs_train.nir_export.errors import ExportError
from ecs_train.nir_export.registry import LayerContext


def _to_numpy(value: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def export_parameter(module: torch.nn.Module, name: str, context: LayerContext) -> np.ndarray | None:
    """Return the value of parameter ``name`` (``"weight"``, ``"bias"``, ...) to export, as float32.

    Sources, in order of preference:

    * ``module.quantized_<name>()`` (``quantized_weight()``, ``quantized_bias()``)
      when the module has it: values that are exact multiples of the weight LSB,
      or None for a missing bias;
    * ``<name>_orig * <name>_mask`` when ``torch.nn.utils.prune`` has
      reparametrized the parameter, so pruned entries are exact zeros even when
      ``module.<name>`` is stale (it is recomputed only on a forward pass);
    * ``module.<name>``.

    A pruning mask is applied to the quantized values too. Returns None when
    the module has no such parameter (``bias=False``).
    """
    quantizer = getattr(module, f"quantized_{name}", None)
    mask = getattr(module, f"{name}_mask", None)
    original = getattr(module, f"{name}_orig", None)

    if callable(quantizer):
        result = quantizer()
        if result is None:
            return None
        value = _to_numpy(result).astype(np.float64)
        quantized = True
    elif original is not None and mask is not None:
        value = _to_numpy(original).astype(np.float64)
        quantized = False
    else:
        raw = getattr(module, name, None)
        if raw is None:
            return None
        value = _to_numpy(raw).astype(np.float64)
        quantized = False

    if mask is not None:
        mask_array = _to_numpy(mask)
        if mask_array.shape != value.shape:
            raise ExportError(
                f"{context.module_label}: pruning mask {name}_mask has shape {mask_array.shape} but {name} has "
                f"shape {value.shape}; remove the pruning reparametrization and prune again"
            )
        value = np.where(mask_array != 0, value, 0.0)

    if not np.all(np.isfinite(value)):
        raise ExportError(f"{context.module_label}: {name} contains non-finite values; the model cannot be exported")

    if quantized and context.weight_format is not None:
        check_lsb_multiples(value, context.weight_format, f"{context.module_label}: quantized_{name}()")

    # Negative zeros from masking would still compare equal, but +0.0 keeps files byte-identical.
    value = value + 0.0
    return value.astype(np.float32)


def check_lsb_multiples(values: np.ndarray, fmt: FixedPointFormat, label: str) -> None:
    """Raise :class:`ExportError` unless every value is an exact multiple of ``fmt``'s LSB within its range."""
    words = values * fmt.scale
    off_grid = words != np.round(words)
    if np.any(off_grid):
        example = float(values[off_grid].ravel()[0])
        raise ExportError(
            f"{label} returned {int(np.count_nonzero(off_grid))} value(s) that are not multiples of the weight LSB "
            f"{fmt.lsb:g} of {fmt} (for example {example!r}); the metadata's quant_cfg does not match the "
            "quantizer, so export with the quant_cfg the model was trained with"
        )
    out_of_range = (words < fmt.min_int) | (words > fmt.max_int)
    if np.any(out_of_range):
        raise ExportError(
            f"{label} returned values up to {float(np.max(np.abs(values))):g}, outside the range "
            f"{fmt.min_value:g} to {fmt.max_value:g} of {fmt}; export with the quant_cfg the model was trained with"
        )
