"""Capture chosen layers of a Flax model, fuse them, and describe the configuration.

``capture`` runs a model once in inference mode and returns the outputs of named layers fused
into one feature map ``[B, *spatial, C]`` (channels last). It is a pure function of its array
arguments, so it can be jitted, vmapped or differentiated around like any JAX function.

* **Flax Linen** — layers are intercepted with ``flax.linen.intercept_methods``; the captured
  arrays are outputs of the traced function, nothing is stored on the side.
* **Flax NNX** — the model is split and merged into a private copy inside the traced function;
  the copy is put in ``eval()`` mode and the chosen submodules of *that copy* record their
  outputs. The caller's module is never modified.

Layer names are module paths joined with ``/``: ``"Conv_0"``, ``"backbone/block_2"``,
``"blocks/0/attn"`` (NNX list items are their index).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax.vectorize import Vectorizer, flatten_vectors, mean_pool  # noqa: F401

# Vectorizer and flatten_vectors live in goldener_jax.vectorize; imported here so the package
# re-exports the whole capture -> vectors path from one place.
__all__ = [
    "FUSIONS",
    "FeatureExtractor",
    "Layer",
    "capture",
    "fuse",
    "layer_names",
]

FUSIONS = ("concat", "add", "mean", "max")
_CALLS = ("first", "last", "all")
_RESIZE_METHODS = ("nearest", "linear", "cubic", "lanczos3", "lanczos5")
_FINGERPRINT_FORMAT = 1


# ----------------------------------------------------------------------------------- layers


@dataclasses.dataclass(frozen=True)
class Layer:
    """A layer to capture, with the choices a plain path string cannot express.

    Attributes:
      path: module path joined with ``/`` (``"encoder/block_1/attn"``).
      output: for a module that returns a tuple/list (pick by ``int`` index) or a dict (pick by
        ``str`` key); a tuple of them picks in nested outputs (``(1, "scaled")``). ``None``
        requires the module to return a single array.
      call: for a module called several times in one forward pass (a shared module):
        ``"first"``, ``"last"``, an ``int`` call index, or ``"all"`` (every call is captured and
        fused like separate layers, in call order). ``None`` accepts only a module called once
        and raises ``ValueError`` otherwise, so reusing a module never goes unnoticed.
      method: the module method whose return value is captured (``"__call__"`` by default).
    """

    path: str
    output: int | str | tuple[int | str, ...] | None = None
    call: int | str | None = None
    method: str = "__call__"

    def __post_init__(self):
        if not isinstance(self.path, str):
            raise TypeError(f"Layer.path must be a str, got {self.path!r}")
        steps = self.output if isinstance(self.output, tuple) else (self.output,)
        if self.output is not None and (
            not steps or any(isinstance(s, bool) or not isinstance(s, (int, str)) for s in steps)
        ):
            raise TypeError(
                "Layer.output must be None, an int index, a str key or a tuple of them, "
                f"got {self.output!r}"
            )
        if self.call is not None and not (
            (isinstance(self.call, int) and not isinstance(self.call, bool)) or self.call in _CALLS
        ):
            raise ValueError(
                f"Layer.call must be None, an int or one of {_CALLS}, got {self.call!r}"
            )
        if not isinstance(self.method, str) or not self.method:
            raise TypeError(f"Layer.method must be a method name, got {self.method!r}")

    def to_json(self) -> str | dict:
        if self.output is None and self.call is None and self.method == "__call__":
            return self.path
        output = list(self.output) if isinstance(self.output, tuple) else self.output
        return {"path": self.path, "output": output, "call": self.call, "method": self.method}


def _as_layer(item, where: str) -> Layer:
    if isinstance(item, Layer):
        return item
    if isinstance(item, str):
        return Layer(item)
    raise TypeError(f"{where} must be a layer path (str) or a Layer, got {item!r}")


def _normalize_layers(layers) -> tuple[tuple[str | None, tuple[Layer, ...]], ...]:
    """``[...]`` -> ``((None, layers),)``; ``{group: [...]}`` -> ``((group, layers), ...)``."""
    if isinstance(layers, (str, Layer)):
        layers = [layers]
    if isinstance(layers, Mapping):
        if not layers:
            raise ValueError("layers must name at least one group, got an empty dict")
        groups = []
        for name, members in layers.items():
            if not isinstance(name, str):
                raise TypeError(f"layer group names must be str, got {name!r}")
            if isinstance(members, (str, Layer)):
                members = [members]
            if not isinstance(members, Sequence) or not members:
                raise ValueError(
                    f"layers[{name!r}] must be a non-empty list of layer paths, got {members!r}"
                )
            groups.append(
                (name, tuple(_as_layer(m, f"layers[{name!r}][{i}]") for i, m in enumerate(members)))
            )
        return tuple(groups)
    if not isinstance(layers, Sequence) or not layers:
        raise ValueError(
            "layers must be a non-empty list of layer paths or a dict {group: [paths]}, "
            f"got {layers!r}"
        )
    return ((None, tuple(_as_layer(m, f"layers[{i}]") for i, m in enumerate(layers))),)


def _layers_json(spec) -> list | dict:
    if len(spec) == 1 and spec[0][0] is None:
        return [layer.to_json() for layer in spec[0][1]]
    return {name: [layer.to_json() for layer in members] for name, members in spec}


def _check_fusion(fusion, name: str) -> str:
    if fusion not in FUSIONS:
        raise ValueError(f"{name} must be one of {FUSIONS}, got {fusion!r}")
    return fusion


# ---------------------------------------------------------------------------- model kinds


def _nnx():
    from flax import nnx

    return nnx


def _is_nnx(model) -> bool:
    nnx = _nnx()
    return isinstance(model, (nnx.Module, nnx.GraphDef))


def _is_linen(model) -> bool:
    import flax.linen as nn

    return isinstance(model, nn.Module)


def _path_str(parts) -> str:
    return "/".join(str(p) for p in parts)


class _Records:
    """Outputs of the target ``(path, method)`` pairs, in call order, plus the names seen."""

    def __init__(self, targets):
        self.targets = set(targets)
        self.outputs: dict[tuple[str, str], list] = {t: [] for t in self.targets}
        self.called: set[str] = set()

    def add(self, path: str, method: str, value) -> None:
        self.called.add(path)
        if (path, method) in self.targets:
            self.outputs[(path, method)].append(value)


def _train_mode_error(e: Exception) -> ValueError:
    return ValueError(
        "the model tried to run in training mode (update batch statistics or draw dropout "
        "randomness) but capture runs models in inference mode; pass the model's inference flag "
        "through apply_kwargs, e.g. apply_kwargs={'train': False} or {'deterministic': True}. "
        f"Flax said: {e}"
    )


def _input_shape_error(e: Exception, x) -> ValueError | None:
    """A clear error for a model run on inputs of another shape than it was built for (Flax
    reports it deep inside a layer, as a parameter shape or a dot_general / conv mismatch)."""
    import flax.errors

    text = str(e)
    shape_words = ("shape", "dimension", "contracting", "incompatible")
    if not (
        isinstance(e, flax.errors.ScopeParamShapeError)
        or (isinstance(e, (TypeError, ValueError)) and any(w in text for w in shape_words))
    ):
        return None
    first = text.splitlines()[0] if text else type(e).__name__
    return ValueError(
        f"the model cannot run on input x of shape {tuple(x.shape)} (dtype {x.dtype}): the "
        f"input does not have the shape the model was built for ({type(e).__name__}: {first}); "
        "give inputs of the shape used at model.init (resize, crop or pad them, or fix the "
        "channel axis)"
    )


def _run_linen(model, variables, x, targets, method, apply_kwargs):
    import flax.errors
    import flax.linen as nn

    records = _Records(targets)

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        path = _path_str(context.module.path)
        if path:  # the root module is the model itself, not a layer
            records.add(path, context.method_name, out)
        return out

    if variables is None:
        raise ValueError("variables must be given for a Flax Linen model (the dict from init)")
    variables = jax.lax.stop_gradient(variables)
    kwargs = dict(apply_kwargs or {})
    if method is not None:
        kwargs["method"] = method
    try:
        with nn.intercept_methods(interceptor):
            # No rngs and no mutable collections: dropout cannot draw, batch stats cannot change.
            model.apply(variables, x, **kwargs)
    except (flax.errors.ModifyScopeVariableError, flax.errors.InvalidRngError) as e:
        raise _train_mode_error(e) from e
    except (flax.errors.ScopeParamShapeError, TypeError, ValueError) as e:
        clear = _input_shape_error(e, x)
        if clear is None:
            raise
        raise clear from e
    return records


_NNX_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("goldener_nnx_capture", default=None)
_NNX_RECORDER_CLASSES: dict[tuple[type, str], type] = {}


def _nnx_recorder_class(cls: type, method: str) -> type:
    """A subclass of ``cls`` whose ``method`` reports its output to the active capture."""
    key = (cls, method)
    if key not in _NNX_RECORDER_CLASSES:
        original = getattr(cls, method)

        @functools.wraps(original)
        def recording(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            active = _NNX_ACTIVE.get()
            if active is not None:
                records, paths = active
                path = paths.get(id(self))
                if path is not None:
                    records.add(path, method, out)
            return out

        _NNX_RECORDER_CLASSES[key] = type(cls.__name__, (cls,), {method: recording})
    return _NNX_RECORDER_CLASSES[key]


def _nnx_split(model, variables):
    nnx = _nnx()
    if isinstance(model, nnx.GraphDef):
        if variables is None:
            raise ValueError("variables must be given when model is an nnx.GraphDef")
        return model, variables
    graphdef, state = nnx.split(model)
    return graphdef, (state if variables is None else variables)


def _run_nnx(model, variables, x, targets, method, apply_kwargs):
    nnx = _nnx()
    graphdef, state = _nnx_split(model, variables)
    # A private copy: switching it to eval mode or recording from it leaves the caller's
    # module untouched, and its batch-statistics updates (if any) are thrown away.
    private = nnx.merge(graphdef, jax.lax.stop_gradient(state))
    private.eval()
    records = _Records(targets)
    modules = {_path_str(p): m for p, m in nnx.iter_modules(private) if p}
    paths = {}
    for path, meth in records.targets:
        module = modules.get(path)
        if module is None:
            continue
        if not callable(getattr(type(module), meth, None)):
            raise ValueError(f"layer {path!r} ({type(module).__name__}) has no method {meth!r}")
        module.__class__ = _nnx_recorder_class(type(module), meth)
        paths[id(module)] = path
    kwargs = dict(apply_kwargs or {})

    def forward(module, x):
        return (module if method is None else getattr(module, method))(x, **kwargs)

    token = _NNX_ACTIVE.set((records, paths))
    try:
        # Inside nnx.capture (collecting nothing) the model's own `sow` calls are dropped
        # instead of being stored on the module.
        nnx.capture(forward)(private, x)
    except (TypeError, ValueError) as e:
        clear = _input_shape_error(e, x)
        if clear is None:
            raise
        raise clear from e
    finally:
        _NNX_ACTIVE.reset(token)
    records.called = set(modules)
    return records


# ----------------------------------------------------------------------------------- fusion


def _to_channels_last(x: jax.Array, channel_axis: int, name: str) -> jax.Array:
    if x.ndim < 2:
        raise ValueError(
            f"feature {name} must have a batch and a channel axis (shape [B, ..., C]), "
            f"got shape {tuple(x.shape)}"
        )
    axis = channel_axis if channel_axis >= 0 else x.ndim + channel_axis
    if not 1 <= axis < x.ndim:
        raise ValueError(
            f"channel_axis={channel_axis} is not a valid non-batch axis for feature {name} of "
            f"shape {tuple(x.shape)}"
        )
    return jnp.moveaxis(x, axis, -1)


def _divides(small: tuple[int, ...], big: tuple[int, ...]) -> bool:
    return len(small) == len(big) and all(b % a == 0 for a, b in zip(small, big, strict=True))


def _resize(f: jax.Array, target: tuple[int, ...], method: str) -> jax.Array:
    """``jax.image.resize`` of the spatial axes of ``[B, *spatial, C]`` to ``target``."""
    spatial = f.shape[1:-1]
    if method == "nearest" and _divides(spatial, target):
        # Integer-factor nearest upsampling is a repeat; as a broadcast XLA fuses it into the
        # consumer instead of running a gather (same values as jax.image.resize).
        expanded, shape = [slice(None)], [f.shape[0]]
        for size, goal in zip(spatial, target, strict=True):
            expanded += [slice(None), None]
            shape += [size, goal // size]
        expanded.append(slice(None))
        shape.append(f.shape[-1])
        return jnp.broadcast_to(f[tuple(expanded)], shape).reshape(f.shape[0], *target, f.shape[-1])
    return jax.image.resize(f, (f.shape[0], *target, f.shape[-1]), method=method)


def fuse(
    features: Sequence[jax.Array],
    *,
    fusion: str = "concat",
    names: Sequence[str] | None = None,
    channel_axis: int = -1,
    resize_method: str = "nearest",
) -> jax.Array:
    """Fuses feature maps into one.

    Every feature is first made channels-last. Spatial (or token) axes of different sizes are
    resized to the largest size on each axis with ``jax.image.resize``; a feature without spatial
    axes (``[B, C]``) is broadcast over them. Then:

    * ``"concat"`` — concatenates on the channel axis (``C = sum C_i``);
    * ``"add"`` / ``"mean"`` / ``"max"`` — elementwise sum / mean / max (same ``C`` required).

    Args:
      features: arrays of shape ``[B, *spatial, C]`` (channels at ``channel_axis``), same ``B``
        and the same number of spatial axes (or none).
      fusion: one of ``FUSIONS``.
      names: names used in error messages (layer paths); defaults to positions.
      channel_axis: where the channels are in the inputs; the output is always channels-last.
      resize_method: ``jax.image.resize`` method.

    Returns:
      Array of shape ``[B, *max_spatial, C_out]``.
    """
    _check_fusion(fusion, "fusion")
    if resize_method not in _RESIZE_METHODS:
        raise ValueError(f"resize_method must be one of {_RESIZE_METHODS}, got {resize_method!r}")
    features = list(features)
    if not features:
        raise ValueError("fuse needs at least one feature, got none")
    names = [f"#{i}" for i in range(len(features))] if names is None else list(names)
    feats = [
        _to_channels_last(jnp.asarray(f), channel_axis, repr(n))
        for f, n in zip(features, names, strict=True)
    ]
    shapes = ", ".join(f"{n!r}: {tuple(f.shape)}" for n, f in zip(names, feats, strict=True))
    batch = feats[0].shape[0]
    if any(f.shape[0] != batch for f in feats):
        raise ValueError(f"features to fuse must share the batch size, got {shapes}")
    ranks = {f.ndim - 2 for f in feats} - {0}
    if len(ranks) > 1:
        raise ValueError(
            "features to fuse must have the same number of spatial/token axes (or none), "
            f"got {shapes}"
        )
    if fusion != "concat" and len({f.shape[-1] for f in feats}) > 1:
        raise ValueError(
            f"fusion={fusion!r} needs the same number of channels in every feature, got {shapes}; "
            "use fusion='concat' or capture layers with equal widths"
        )
    if ranks:
        rank = ranks.pop()
        target = tuple(
            max(f.shape[1 + a] for f in feats if f.ndim - 2 == rank) for a in range(rank)
        )
        resized = []
        for f in feats:
            if f.ndim == 2:
                f = jnp.broadcast_to(
                    f[(slice(None),) + (None,) * rank], (batch, *target, f.shape[-1])
                )
            elif f.shape[1:-1] != target:
                f = _resize(f, target, resize_method)
            resized.append(f)
        feats = resized
    if len(feats) == 1:
        return feats[0]
    if fusion == "concat":
        return jnp.concatenate(feats, axis=-1)
    dtype = jnp.result_type(*feats)
    stacked = jnp.stack([f.astype(dtype) for f in feats])
    if fusion == "add":
        return jnp.sum(stacked, axis=0)
    if fusion == "mean":
        return jnp.mean(stacked, axis=0)
    return jnp.max(stacked, axis=0)


# ---------------------------------------------------------------------------------- capture


def _describe(value) -> str:
    if hasattr(value, "shape"):
        return f"array{tuple(value.shape)}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_describe(v) for v in value) + ")"
    return type(value).__name__


def _pick_output(value, layer: Layer):
    name = layer.path
    if layer.output is None:
        if not hasattr(value, "shape"):
            raise ValueError(
                f"layer {name!r} returned {_describe(value)}, not a single array; choose one "
                f"with Layer({name!r}, output=INDEX_OR_KEY)"
            )
        return value
    steps = layer.output if isinstance(layer.output, tuple) else (layer.output,)
    out = value
    for step in steps:
        if isinstance(out, Mapping):
            if step not in out:
                raise ValueError(
                    f"layer {name!r} returned {_describe(value)}; output={layer.output!r}: "
                    f"{step!r} is not one of the keys {sorted(map(str, out))}"
                )
        elif isinstance(out, (tuple, list)):
            if not isinstance(step, int) or not -len(out) <= step < len(out):
                raise ValueError(
                    f"layer {name!r} returned {_describe(value)}; output={layer.output!r}: "
                    f"{step!r} must be an int index in [{-len(out)}, {len(out)})"
                )
        else:
            raise ValueError(
                f"layer {name!r} returned {_describe(value)}; output={layer.output!r} can only "
                "pick from a tuple, list or dict"
            )
        out = out[step]
    if not hasattr(out, "shape"):
        raise ValueError(
            f"layer {name!r}: output={layer.output!r} is {_describe(out)}, not an array; "
            "pick deeper with a tuple, e.g. output=(1, 'key')"
        )
    return out


def _pick_calls(calls: list, layer: Layer) -> list:
    n = len(calls)
    if layer.call is None:
        if n != 1:
            raise ValueError(
                f"layer {layer.path!r} was called {n} times in one forward pass (a shared "
                f"module); say which output to use: Layer({layer.path!r}, call='first' | 'last' "
                "| 'all' | INDEX) (a module run by nn.scan is called once per step, and no step's "
                "output can be captured: choose a layer outside the scan)"
            )
        return calls
    if layer.call == "first":
        return calls[:1]
    if layer.call == "last":
        return calls[-1:]
    if layer.call == "all":
        return calls
    if not -n <= layer.call < n:
        raise ValueError(
            f"Layer({layer.path!r}, call={layer.call}) but the layer was called {n} times"
        )
    return [calls[layer.call]]


def _run(model, variables, x, targets, method, apply_kwargs) -> _Records:
    if _is_nnx(model):
        return _run_nnx(model, variables, x, targets, method, apply_kwargs)
    if _is_linen(model):
        return _run_linen(model, variables, x, targets, method, apply_kwargs)
    raise TypeError(
        "model must be a flax.linen.Module, a flax.nnx.Module or an nnx.GraphDef, "
        f"got {type(model).__name__}"
    )


def _collect(model, variables, x, spec, method, apply_kwargs) -> dict:
    targets = {(layer.path, layer.method) for _, members in spec for layer in members}
    records = _run(model, variables, x, targets, method, apply_kwargs)
    missing = sorted({path for path, _ in targets if path not in records.called})
    if missing:
        raise ValueError(
            f"unknown layer(s) {missing}: no module with that path ran in the forward pass. "
            f"Layers that exist: {sorted(records.called)}"
        )
    for path, meth in sorted(targets):
        if not records.outputs[(path, meth)]:
            raise ValueError(
                f"layer {path!r} ran but no call of its method {meth!r} was recorded: either "
                f"the method is not called, or the layer {_LIFTED_WHY}"
            )
    return records.outputs


def _picked(outputs, spec, channel_axis) -> list[tuple[str, list[jax.Array], list[str]]]:
    """Per group: its name, the chosen arrays (channels-last, no gradient), their names."""
    groups = []
    for group, members in spec:
        feats, names = [], []
        for layer in members:
            calls = _pick_calls(outputs[(layer.path, layer.method)], layer)
            for i, value in enumerate(calls):
                name = layer.path if len(calls) == 1 else f"{layer.path}[call {i}]"
                value = _to_channels_last(_pick_output(value, layer), channel_axis, repr(name))
                feats.append(jax.lax.stop_gradient(value))
                names.append(name)
        groups.append((f"group {group!r}" if group is not None else "layers", feats, names))
    return groups


def _fuse_groups(groups, fusion, group_fusion, resize_method) -> jax.Array:
    maps = [
        fuse(feats, fusion=fusion, names=names, resize_method=resize_method)
        for _, feats, names in groups
    ]
    if len(maps) == 1:
        return maps[0]
    names = [name for name, _, _ in groups]
    return fuse(maps, fusion=group_fusion, names=names, resize_method=resize_method)


def _nearest_target(groups, resize_method) -> tuple[int, ...] | None:
    """The fused map's spatial shape when every resize on the way is a nearest-neighbour
    upsampling by integer factors (or there is none); ``None`` otherwise.

    Then each fused row is a fusion of one row of each captured map, so rows can be computed
    from the captured maps directly, without building the fused map.
    """
    ranks = {f.ndim - 2 for _, feats, _ in groups for f in feats} - {0}
    if len(ranks) > 1:
        return None
    if not ranks:
        return ()
    shapes = [{f.shape[1:-1] for f in feats if f.ndim > 2} for _, feats, _ in groups]
    if resize_method != "nearest":  # only when nothing needs resizing
        return shapes[0].pop() if len(set().union(*shapes)) == 1 else None
    group_targets = []
    for maps in shapes:
        if not maps:
            continue
        target = tuple(max(m[a] for m in maps) for a in range(len(next(iter(maps)))))
        if not all(_divides(m, target) for m in maps):
            return None
        group_targets.append(target)
    overall = tuple(max(t[a] for t in group_targets) for a in range(len(group_targets[0])))
    return overall if all(_divides(t, overall) for t in group_targets) else None


def _reduce_commutes(groups, row_fusion, fusion, group_fusion, resize_method) -> bool:
    """True when reducing the fused map's rows (``row_fusion``) equals fusing the reduced
    captured maps. Mean and sum need fusions that are linear per channel (concat, add, mean);
    max needs concat or max; all need resizes that repeat every value an integer number of
    times (nearest, integer factors)."""
    allowed = ("concat", "max") if row_fusion == "max" else ("concat", "add", "mean")
    if fusion not in allowed or (len(groups) > 1 and group_fusion not in allowed):
        return False
    return _nearest_target(groups, resize_method) is not None


def _gather_fused_rows(groups, target, index, fusion, group_fusion) -> jax.Array:
    """Rows ``index`` (``int[B, R]``, row-major over ``target``) of the fused map, ``[B, R, C]``,
    read from the captured maps (valid when ``_nearest_target`` returned ``target``)."""
    coords, rest = [], index
    for size in reversed(target):
        coords.insert(0, rest % size)
        rest = rest // size
    picked = []
    for name, feats, names in groups:
        pieces = []
        for f in feats:
            spatial = f.shape[1:-1]
            source = jnp.zeros_like(index)
            for coord, goal, size in zip(coords, target, spatial, strict=False):
                source = source * size + coord // (goal // size)
            # One flat row gather: XLA's CPU gather for take_along_axis on [B, n, C] is slow.
            batch, n_rows = f.shape[0], math.prod(spatial)
            flat = f.reshape(batch * n_rows, f.shape[-1])
            source = source + (jnp.arange(batch) * n_rows)[:, None]
            pieces.append(jnp.take(flat, source, axis=0, mode="clip"))
        picked.append((name, pieces, names))
    return _fuse_groups(picked, fusion, group_fusion, "nearest")


def _fused_channels(groups, fusion, group_fusion) -> int:
    widths = [
        sum(f.shape[-1] for f in feats) if fusion == "concat" else feats[0].shape[-1]
        for _, feats, _ in groups
    ]
    return sum(widths) if group_fusion == "concat" else widths[0]


def _reduced(groups, target, fusion, group_fusion, row_fusion, weights=None) -> jax.Array:
    """``[B, C]``: the (masked) mean / sum / max over the rows of the fused map, computed on
    each captured map before fusing (valid when ``_reduce_commutes``), so the full-resolution
    fused map is never built.

    ``weights`` (``[B, prod(target)]``, 0/1) restricts the reduction to some rows of the fused
    map: each captured map's row then counts as many times as it was repeated into kept rows.
    """
    batch = next(f for _, feats, _ in groups for f in feats).shape[0]
    if weights is None and row_fusion != "mean":
        weights = jnp.ones((batch, math.prod(target)), bool)
    count = None
    if weights is not None:
        weights = weights.astype(jnp.float32)
        count = jnp.maximum(jnp.sum(weights, axis=1, keepdims=True), 1.0)
    reduced = []
    for name, feats, names in groups:
        vectors = []
        for f in feats:
            rows = f.reshape(batch, -1, f.shape[-1])
            rows = rows.astype(jnp.promote_types(f.dtype, jnp.float32))
            if weights is None:
                vectors.append(jnp.mean(rows, axis=1))
                continue
            spatial = f.shape[1:-1]
            if spatial:
                split = [batch]
                for size, goal in zip(spatial, target, strict=False):
                    split += [size, goal // size]
                cells = tuple(range(2, 1 + 2 * len(spatial), 2))
                w = jnp.sum(weights.reshape(split), axis=cells).reshape(batch, -1)
            else:
                w = jnp.sum(weights, axis=1, keepdims=True)
            if row_fusion == "max":
                kept = jnp.where(w[:, :, None] > 0, rows, -jnp.inf)
                vectors.append(jnp.where(count > 0, jnp.max(kept, axis=1), 0.0))
            else:
                total = jnp.sum(w[:, :, None] * rows, axis=1)
                vectors.append(total / count if row_fusion == "mean" else total)
        reduced.append((name, vectors, names))
    return _fuse_groups(reduced, fusion, group_fusion, "nearest")


def capture(
    model,
    variables,
    x,
    *,
    layers,
    fusion: str = "concat",
    group_fusion: str = "concat",
    method=None,
    channel_axis: int = -1,
    resize_method: str = "nearest",
    apply_kwargs: Mapping[str, Any] | None = None,
) -> jax.Array:
    """Runs ``model`` once on ``x`` in inference mode and returns the named layers, fused.

    Pure and jit-compatible: ``jax.jit(lambda v, x: capture(model, v, x, layers=...))``.
    Inference mode means: no PRNG streams and no mutable collections for Linen (a model that
    still tries to use dropout or update batch statistics raises ``ValueError`` pointing at
    ``apply_kwargs``), ``eval()`` on a private copy for NNX, and ``stop_gradient`` on variables
    and captured outputs (no gradient flows through the features).

    Args:
      model: a ``flax.linen.Module``; a ``flax.nnx.Module``; or an ``nnx.GraphDef`` (then
        ``variables`` is its ``nnx.State``).
      variables: Linen variables (``{"params": ..., "batch_stats": ...}``); for NNX, ``None``
        (use the module's own state) or an ``nnx.State`` to use instead.
      x: the model input (any pytree the model accepts), batch first.
      layers: a list of layer paths / ``Layer`` (fused with ``fusion``), or a dict
        ``{group: [layers]}`` (each group fused with ``fusion``, then the groups with
        ``group_fusion``).
      fusion: ``"concat"`` | ``"add"`` | ``"mean"`` | ``"max"``, across layers.
      group_fusion: the same choices, across groups.
      method: Linen: the ``method`` passed to ``model.apply`` (name or function); NNX: name of
        the module method to call. ``None`` calls the model itself.
      channel_axis: channel axis of the captured outputs (Flax is channels-last: ``-1``). The
        result is always channels-last.
      resize_method: ``jax.image.resize`` method used to bring maps/token sequences of different
        sizes to the largest one.
      apply_kwargs: extra keyword arguments of the forward call, e.g. ``{"train": False}``.

    Returns:
      Array of shape ``[B, *spatial, C]``: the fused features.

    Raises:
      ValueError: unknown layer (the message lists the layers that exist), a shared module or a
        tuple/dict output without an explicit choice, channel counts that ``add``/``mean``/``max``
        cannot combine, or a model that ran in training mode.
    """
    spec = _normalize_layers(layers)
    _check_fusion(fusion, "fusion")
    _check_fusion(group_fusion, "group_fusion")
    outputs = _collect(model, variables, x, spec, method, apply_kwargs)
    try:
        groups = _picked(outputs, spec, channel_axis)
    except jax.errors.UnexpectedTracerError as e:
        raise ValueError(_LIFTED) from e
    return _fuse_groups(groups, fusion, group_fusion, resize_method)


# The interceptor sees a layer inside a lifted transform (nn.remat / nn.vmap / nn.scan) run on
# the transform's own tracers, which cannot leave it; NNX transforms run copies of the modules.
_LIFTED_WHY = (
    "runs inside a lifted transform (nn.remat / nn.vmap / nn.scan, or nnx.remat / nnx.scan /"
    " nnx.vmap), whose outputs capture cannot take out of it; choose the transformed module's"
    " parent or a layer outside the transform"
)
_LIFTED = "a chosen layer " + _LIFTED_WHY


def layer_names(model, variables, x, *, method=None, apply_kwargs=None) -> list[str]:
    """The layer paths ``capture`` accepts for this model and input (traced; nothing is
    computed)."""
    names: list[str] = []

    def run(v, x):
        names.extend(sorted(_run(model, v, x, set(), method, apply_kwargs).called))
        return 0

    jax.eval_shape(run, variables, x)
    return names


# -------------------------------------------------------------------------------- extractor

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _stable_repr(obj) -> str:
    return _ADDRESS.sub("", repr(obj))


def _callable_name(fn):
    """What identifies ``fn`` in a fingerprint: its qualified name (a lambda or local function:
    plus a digest of its source), and the values it carries at run time, which change what it
    computes under the same name: a ``functools.partial``'s arguments, a closure's cell values
    (``make_scale(1.0)`` and ``make_scale(3.0)`` once fingerprinted alike). A plain function
    keeps the bare name (the fingerprints of stores written before stay valid)."""
    if fn is None:
        return None
    if isinstance(fn, str):
        return fn
    if isinstance(fn, functools.partial):
        return {
            "partial": _callable_name(fn.func),
            "args": _json_safe(list(fn.args)),
            "keywords": _json_safe(dict(fn.keywords)),
        }
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    if "<lambda>" in name or "<locals>" in name:
        # A lambda's name says nothing about what it does; its source does.
        try:
            name += ":" + hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]
        except (OSError, TypeError):
            pass
    cells = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        # A function in its own closure (recursion) is named, not followed.
        cells.append(name if value is fn else _json_safe(value))
    if cells:
        digest = hashlib.sha256(json.dumps(cells, sort_keys=True).encode()).hexdigest()[:16]
        name += "|closure:" + digest
    return name


def _json_safe(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if callable(value):
        return _callable_name(value)
    if (
        isinstance(value, (np.ndarray, jax.Array))
        and value.size > np.get_printoptions()["threshold"]
    ):
        # repr elides the middle of a large array ("..."): two arrays differing there printed
        # alike. Their bytes are hashed instead (a small array keeps its exact repr).
        dtype, shape, data = _leaf_bytes(value)
        return {"array": dtype, "shape": list(shape), "sha256": hashlib.sha256(data).hexdigest()}
    return _stable_repr(value)


def _leaf_bytes(leaf) -> tuple[str, tuple[int, ...], bytes]:
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    arr = np.asarray(jax.device_get(leaf))
    return str(arr.dtype), tuple(arr.shape), np.ascontiguousarray(arr).tobytes()


def _variables_summary(variables) -> dict:
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    digest = hashlib.sha256()
    tree = []
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        name = jax.tree_util.keystr(path)
        dtype, shape, data = _leaf_bytes(leaf)
        tree.append([name, list(shape), dtype])
        digest.update(f"{name}|{shape}|{dtype}|".encode())
        digest.update(data)
    return {"tree": tree, "digest": digest.hexdigest()}


def _without_rng_state(model, variables):
    """NNX state minus its PRNG streams: their keys and counters move with every training-mode
    call but never change what inference computes."""
    if not _is_nnx(model):
        return variables
    nnx = _nnx()
    return nnx.filter_state(variables, nnx.Not(nnx.RngState))


def _model_summary(model, variables) -> dict:
    cls = type(model)
    if _is_nnx(model):
        nnx = _nnx()
        graphdef, state = _nnx_split(model, variables)
        # Capture always runs an eval() copy: the train/eval flags in the graph are not config.
        canonical = nnx.merge(graphdef, state)
        canonical.eval()
        structure = nnx.split(canonical)[0]
        return {
            "kind": "nnx",
            "type": f"{cls.__module__}.{cls.__qualname__}",
            "structure": _stable_repr(structure),
        }
    return {
        "kind": "linen",
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "structure": _stable_repr(model),
    }


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureExtractor:
    """A Flax model, the layers to capture and how to turn them into vectors, as one value.

    ``ex(x, mask=None, key=None) -> (vectors [B, R, C], valid bool[B, R])`` is pure. With
    ``vectorizer=None`` every fused map ``[B, *spatial, C]`` is mean-pooled over its spatial /
    token axes to one vector per sample (``R == 1``, all valid).

    The extractor is a pytree whose only leaves are the variables, so the recommended way to jit
    it is to pass it as an argument — the weights are then inputs of the compiled function, not
    constants baked into it::

        f = jax.jit(lambda ex, x: ex(x))      # or ex.jit()
        vectors, valid = f(ex, x)

    ``jax.jit(ex.__call__)`` also works (the weights become constants); so does passing it as a
    static argument (``__hash__``/``__eq__`` use the fingerprint).

    ``model``, ``variables``, ``layers``, ``fusion``, ``group_fusion``, ``method``,
    ``channel_axis``, ``resize_method`` and ``apply_kwargs`` are as in ``capture``. For NNX,
    ``variables=None`` takes the module's state.

    Attributes:
      vectorizer: a ``Vectorizer`` or ``None`` (mean-pool to one vector per sample).
      preprocess: optional ``x -> x`` applied (inside jit) before the model.
    """

    model: Any
    variables: Any = None
    layers: Any = None
    fusion: str = "concat"
    group_fusion: str = "concat"
    vectorizer: Vectorizer | None = None
    preprocess: Callable | None = None
    method: Any = None
    channel_axis: int = -1
    resize_method: str = "nearest"
    apply_kwargs: Mapping[str, Any] | None = None

    def __post_init__(self):
        if not (_is_nnx(self.model) or _is_linen(self.model)):
            raise TypeError(
                "model must be a flax.linen.Module, a flax.nnx.Module or an nnx.GraphDef, "
                f"got {type(self.model).__name__}"
            )
        if self.layers is None:
            raise ValueError("layers must be given: a list of layer paths or {group: [paths]}")
        _normalize_layers(self.layers)
        _check_fusion(self.fusion, "fusion")
        _check_fusion(self.group_fusion, "group_fusion")
        if self.vectorizer is not None and not isinstance(self.vectorizer, Vectorizer):
            raise TypeError(f"vectorizer must be a Vectorizer or None, got {self.vectorizer!r}")
        if self.preprocess is not None and not callable(self.preprocess):
            raise TypeError(f"preprocess must be callable or None, got {self.preprocess!r}")
        if self.resize_method not in _RESIZE_METHODS:
            raise ValueError(
                f"resize_method must be one of {_RESIZE_METHODS}, got {self.resize_method!r}"
            )
        if _is_nnx(self.model):
            graphdef, state = _nnx_split(self.model, self.variables)
            object.__setattr__(self, "model", graphdef)
            object.__setattr__(self, "variables", state)
        elif self.variables is None:
            raise ValueError("variables must be given for a Flax Linen model")
        # A snapshot: nnx.split shares Variable objects with the module (and a dict of Linen
        # variables can be edited in place), so later training must not change this extractor
        # behind its cached fingerprint. The arrays themselves are immutable and not copied.
        object.__setattr__(self, "variables", jax.tree.map(lambda a: a, self.variables))

    # -- computation

    def _groups(self, x):
        if self.preprocess is not None:
            x = self.preprocess(x)
        spec = _normalize_layers(self.layers)
        outputs = _collect(self.model, self.variables, x, spec, self.method, self.apply_kwargs)
        return _picked(outputs, spec, self.channel_axis)

    def features(self, x) -> jax.Array:
        """The fused feature map ``[B, *spatial, C]`` of ``x`` (after ``preprocess``)."""
        return _fuse_groups(self._groups(x), self.fusion, self.group_fusion, self.resize_method)

    def __call__(self, x, *, mask=None, key=None) -> tuple[jax.Array, jax.Array]:
        """Vectors ``[B, R, C]`` and their validity ``bool[B, R]`` for the batch ``x``."""
        if self.vectorizer is None and (mask is not None or key is not None):
            raise ValueError(
                "mask and key need a vectorizer; with vectorizer=None every sample is "
                "mean-pooled to one vector"
            )
        groups = self._groups(x)
        batch = next(f for _, feats, _ in groups for f in feats).shape[0]
        # One vector per sample from all (or masked) rows: reduce each captured map, then fuse
        # the vectors, when that is exact; the fused map is then never built.
        row_fusion = "mean"
        if self.vectorizer is not None:
            row_fusion = self.vectorizer.fusion if self.vectorizer.selects_all_rows else None
        if (
            row_fusion is not None
            and key is None
            and _reduce_commutes(
                groups, row_fusion, self.fusion, self.group_fusion, self.resize_method
            )
        ):
            target = _nearest_target(groups, self.resize_method)
            weights, valid = None, jnp.ones((batch, 1), bool)
            if mask is not None:
                shape = (batch, *target, _fused_channels(groups, self.fusion, self.group_fusion))
                _, _, _, weights = self.vectorizer._plan(shape, mask, None)
                valid = jnp.any(weights, axis=1, keepdims=True)
            vectors = _reduced(groups, target, self.fusion, self.group_fusion, row_fusion, weights)
            dtype = jnp.result_type(*[f for _, feats, _ in groups for f in feats])
            return vectors[:, None, :].astype(dtype), valid
        if self.vectorizer is not None and self.vectorizer.random is not None:
            # A few drawn rows per sample: compute those rows only, not the fused map.
            target = _nearest_target(groups, self.resize_method)
            if target is not None:
                shape = (
                    batch,
                    *target,
                    _fused_channels(groups, self.fusion, self.group_fusion),
                )
                out = self.vectorizer._from_row_source(
                    shape,
                    lambda index: _gather_fused_rows(
                        groups, target, index, self.fusion, self.group_fusion
                    ),
                    mask=mask,
                    key=key,
                )
                if out is not None:
                    return out
        features = _fuse_groups(groups, self.fusion, self.group_fusion, self.resize_method)
        if self.vectorizer is None:
            return mean_pool(features)
        return self.vectorizer(features, mask=mask, key=key)

    def jit(self) -> Callable:
        """``f(x, *, mask=None, key=None)`` compiled once, with the variables as inputs."""
        return lambda x, *, mask=None, key=None: _jitted_call(self, x, mask, key)

    # -- identity

    def config(self) -> dict:
        """JSON-able description: everything that changes the vectors, including a digest of
        the variables' values (computed once: hashing the weights reads them all)."""
        return json.loads(self._config_json)

    @functools.cached_property
    def _config_json(self) -> str:
        return json.dumps(self._build_config(), sort_keys=True, separators=(",", ":"))

    def _build_config(self) -> dict:
        return {
            "format": _FINGERPRINT_FORMAT,
            "model": _model_summary(self.model, self.variables),
            "method": _json_safe(self.method),
            "apply_kwargs": _json_safe(dict(self.apply_kwargs or {})),
            "layers": _layers_json(_normalize_layers(self.layers)),
            "fusion": self.fusion,
            "group_fusion": self.group_fusion,
            "channel_axis": self.channel_axis,
            "resize_method": self.resize_method,
            "vectorizer": None if self.vectorizer is None else self.vectorizer.config(),
            "preprocess": _callable_name(self.preprocess),
            "variables": _variables_summary(_without_rng_state(self.model, self.variables)),
        }

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 hex digest of ``config()``: equal across processes for the same extractor."""
        return hashlib.sha256(self._config_json.encode()).hexdigest()

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __eq__(self, other) -> bool:
        if not isinstance(other, FeatureExtractor):
            return NotImplemented
        return self is other or self.fingerprint == other.fingerprint

    def __repr__(self) -> str:
        return (
            f"FeatureExtractor(model={type(self.model).__name__}, layers={self.layers!r}, "
            f"fusion={self.fusion!r}, group_fusion={self.group_fusion!r}, "
            f"vectorizer={self.vectorizer!r})"
        )


# One jitted function for every extractor: extractors with the same configuration share its
# compilations (the variables are inputs, the configuration is the pytree's static part).
_jitted_call = jax.jit(lambda ex, x, mask, key: ex(x, mask=mask, key=key))

_STATIC_FIELDS = tuple(
    f.name for f in dataclasses.fields(FeatureExtractor) if f.name != "variables"
)


class _Static:
    """Hashable wrapper of the non-array fields (dicts and lists compared by value)."""

    def __init__(self, values: tuple):
        self.values = values
        self._key = json.dumps(_json_safe(values), sort_keys=True)

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return (
            isinstance(other, _Static)
            and self._key == other._key
            and all(
                a is b or _static_equal(a, b)
                for a, b in zip(self.values, other.values, strict=True)
            )
        )


def _static_equal(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an object without a usable == is only equal to itself
        return False


def _flatten(ex: FeatureExtractor):
    # Cached: jit flattens its arguments on every call, and the key is a JSON dump.
    static = ex.__dict__.get("_static")
    if static is None:
        static = _Static(tuple(getattr(ex, name) for name in _STATIC_FIELDS))
        ex.__dict__["_static"] = static
    return (ex.variables,), static


def _unflatten(static: _Static, children) -> FeatureExtractor:
    ex = object.__new__(FeatureExtractor)
    for name, value in zip(_STATIC_FIELDS, static.values, strict=True):
        object.__setattr__(ex, name, value)
    object.__setattr__(ex, "variables", children[0])
    ex.__dict__["_static"] = static
    return ex


jax.tree_util.register_pytree_node(FeatureExtractor, _flatten, _unflatten)
