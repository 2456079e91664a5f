"""Pipelines stored as JSON specs, run and resumed step by step.

A spec is a human-readable JSON document (no pickle, nothing evaluated)::

    {
      "version": 1,
      "source": {"kind": "arrays", "path": "digits.npz", "data_key": "image",
                 "label_key": "label"},
      "extractor": {"model": "my_models:small_cnn", "model_args": {"num_classes": 10},
                    "variables": "cnn_variables", "layers": ["Conv_0", "Dense_0"],
                    "fusion": "concat"},
      "store": "store",
      "steps": [
        {"action": "describe", "name": "describe", "args": {"batch_size": 64}},
        {"action": "select", "name": "round1", "args": {"size": 50, "method": "auto",
                                                      "seed": 0}},
        {"action": "split", "name": "split", "args": {"sets": {"train": 0.8, "val": 0.2}}},
        {"action": "curate", "name": "issues", "args": {"kind": "label_issues", "k": 10}},
        {"action": "drift", "name": "drift", "args": {"new": "describe_new"}}
      ]
    }

Fields:

* ``source``: ``{"kind": "arrays", "path": <.npz>}`` (its arrays by name; ``data_key`` names the
  model input, default ``"image"``; optional ``label_key``, ``group_key``, ``mask_key``) or
  ``{"kind": "tfds", "name", "split", "data_dir"}`` (and the same keys; TFDS's default
  ``label_key`` is ``"label"``). Read through :class:`~goldener_jax.ArraySource` /
  :class:`~goldener_jax.TFDSSource`.
* ``extractor``: ``model`` is ``"package.module:factory"``, a callable returning the Flax model
  (called with ``model_args``); ``variables`` an Orbax checkpoint directory of the model's
  variables (:func:`save_variables` writes one); ``layers`` a list of layer paths (or of
  :class:`~goldener_jax.Layer` fields as objects), or ``{group: [paths]}``; optional
  ``fusion``, ``group_fusion``, ``vectorizer`` (:class:`~goldener_jax.Vectorizer` fields),
  ``method``, ``channel_axis``, ``resize_method``, ``apply_kwargs``.
* ``store``: where ``describe`` writes the :class:`~goldener_jax.FeatureStore` (default
  ``"store"``).
* ``steps``: run in order; each has an ``action``, a unique ``name`` (a folder name) and
  ``args``:

  - ``describe``: ``batch_size``, ``dtype``, and optionally its own ``source`` and ``store`` (to
    describe new data, e.g. a production batch, with the same extractor).
  - ``select``: the arguments of :func:`goldener_jax.select` that JSON can hold (``size``,
    ``method``, ``metric``, ``reduce``, ``method_options``, ...), ``seed`` (the
    ``jax.random.key``, default 0), ``store`` (a describe step's name; default: the latest
    one before this step) and ``anchors``: a list of sample indices or the name of an earlier
    select step whose picks count as already chosen (the next labelling round).
  - ``split``: the arguments of :func:`goldener_jax.split` (``sets``, ``method``, ...), ``seed``,
    ``store``.
  - ``curate``: ``kind`` (``"label_issues"`` or ``"near_duplicates"``) and that function's
    arguments, ``store``.
  - ``drift``: ``new`` (a describe step's name), ``reference`` (default: the first describe
    step), ``seed``, the arguments of :func:`goldener_jax.drift.drift`, and optionally
    ``monitoring_size`` (with ``labelled``: a select step's name or indices) for
    :func:`goldener_jax.drift.monitoring_selection`.

Relative paths in ``source`` and ``extractor`` are relative to the spec file's folder; a
relative ``store`` is inside the run's output folder. An unknown key, a wrong version, an
unknown action, a model path that does not import, or variables that do not match the model
raise :class:`SpecError` naming the field (e.g. ``steps[2].args.size``).

``Pipeline.load(path).run(out_dir)`` runs or resumes. Step ``s`` writes its outputs under
``out_dir/<s.name>/`` and, last, ``step.json`` with its fingerprint: a digest of the step's
config, the library's version and the fingerprints of its inputs (a describe step: the
source's description and file digest and the extractor's fingerprint, weights included; what a
step reading a store depends on is that store's content, a digest of its manifest and of every
chunk's checksum). A step whose ``step.json`` holds the same fingerprint is reused, not
recomputed; a step killed midway is resumed by the library's own resumption (``describe``
continues its store, ``select`` / ``split`` their checkpoints in the step folder), and outputs
of a changed step are replaced (a describe step's store too, when its records show the step
wrote it; a store the pipeline did not write is refused, never replaced).

A describe step is reused only while its store is present and complete (manifest, every batch
done, every chunk there; a cheap check that reads no chunk): a store deleted or damaged since
is described again, ``describe`` resuming it. A chunk failing its checksum passes that check;
the step that reads the store finds it, and the run has the store's describe steps run again
(``describe`` verifies every chunk and re-does the damaged batches) before going on. A store
described again to the same content reruns none of its readers. A store ``describe`` cannot
repair is reported with the path to delete.

The returned :class:`RunSummary` (also ``out_dir/summary.json``) says which steps ran and which
were reused.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import inspect
import json
import os
import shutil
import time
import warnings
from collections.abc import Mapping

import numpy as np

__all__ = ["ACTIONS", "SPEC_VERSION", "Pipeline", "RunSummary", "SpecError", "save_variables"]

SPEC_VERSION = 1
ACTIONS = ("describe", "select", "split", "curate", "drift")
CURATE_KINDS = ("label_issues", "near_duplicates")

_TOP_KEYS = {"version", "source", "extractor", "store", "steps"}
_TOP_REQUIRED = ("version", "source", "extractor", "steps")
_SOURCE_KEYS = {
    "arrays": {"kind", "path", "data_key", "label_key", "group_key", "mask_key"},
    "tfds": {"kind", "name", "split", "data_dir", "data_key", "label_key", "group_key", "mask_key"},
}
_SOURCE_REQUIRED = {"arrays": ("path",), "tfds": ("name",)}
_EXTRACTOR_KEYS = {
    "model", "model_args", "variables", "layers", "fusion", "group_fusion", "vectorizer",
    "method", "channel_axis", "resize_method", "apply_kwargs",
}  # fmt: skip
_EXTRACTOR_REQUIRED = ("model", "variables", "layers")
_STEP_KEYS = {"action", "name", "args"}
_DESCRIBE_ARGS = {"batch_size", "dtype", "source", "store"}
# Arguments of the library functions a spec may not set: the data, the key, and where things go.
_NOT_FROM_SPEC = {
    "store_or_array", "x", "key", "labels", "groups", "sample_idx", "checkpoint_dir",
    "manifest_path", "mesh", "progress", "anchors", "reference", "new",
}  # fmt: skip


class SpecError(ValueError):
    """A pipeline spec that cannot run; the message names the field."""


# ---------------------------------------------------------------------------------------------
# validation


def _fail(field: str, message: str):
    raise SpecError(f"{field}: {message}")


def _keys(obj, field: str, allowed: set, required=()) -> None:
    if not isinstance(obj, Mapping):
        _fail(field, f"must be a JSON object, got {type(obj).__name__}")
    for k in obj:
        if k not in allowed:
            _fail(f"{field}.{k}", f"unknown key (expected one of {sorted(allowed)})")
    for k in required:
        if k not in obj:
            _fail(f"{field}.{k}", "missing (required)")


def _str(obj, field: str) -> str:
    if not isinstance(obj, str) or not obj:
        _fail(field, f"must be a non-empty string, got {obj!r}")
    return obj


def _check_source(src, field: str) -> None:
    if not isinstance(src, Mapping):
        _fail(field, f"must be a JSON object, got {type(src).__name__}")
    kind = src.get("kind")
    if kind not in _SOURCE_KEYS:
        _fail(f"{field}.kind", f"must be one of {sorted(_SOURCE_KEYS)}, got {kind!r}")
    _keys(src, field, _SOURCE_KEYS[kind], ("kind", *_SOURCE_REQUIRED[kind]))
    for k, v in src.items():
        if k != "kind" and v is not None:
            _str(v, f"{field}.{k}")


def _import_factory(path: str, field: str):
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        _fail(field, f"must be 'package.module:factory', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        _fail(field, f"cannot import module {module_name!r} ({type(e).__name__}: {e})")
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            _fail(field, f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        _fail(field, f"{path!r} is not callable")
    return obj


def _signature_args(fn, field: str, args: Mapping, extra: set) -> None:
    params = inspect.signature(fn).parameters
    allowed = ({p for p in params if p not in _NOT_FROM_SPEC} | extra) - {"self"}
    for k in args:
        if k not in allowed:
            _fail(f"{field}.{k}", f"unknown argument (expected one of {sorted(allowed)})")


def _check_json(obj, field: str) -> None:
    try:
        json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as e:
        _fail(field, f"must hold plain JSON values ({e})")


def validate(spec) -> None:
    """Raises :class:`SpecError` naming the first field that is wrong."""
    import goldener_jax as gj

    # A from-import of the name: once the package exports the function `drift`, the attribute
    # goldener_jax.drift is that function, not this module.
    from goldener_jax.drift import drift as drift_fn

    _keys(spec, "spec", _TOP_KEYS, _TOP_REQUIRED)
    _check_json(spec, "spec")
    version = spec["version"]
    if isinstance(version, bool) or version != SPEC_VERSION:
        _fail("version", f"{version!r} is not supported (this goldener-jax reads {SPEC_VERSION})")
    _check_source(spec["source"], "source")
    ex = spec["extractor"]
    _keys(ex, "extractor", _EXTRACTOR_KEYS, _EXTRACTOR_REQUIRED)
    _import_factory(_str(ex["model"], "extractor.model"), "extractor.model")
    _str(ex["variables"], "extractor.variables")
    if "model_args" in ex and not isinstance(ex["model_args"], Mapping):
        _fail("extractor.model_args", "must be a JSON object")
    if "store" in spec:
        _str(spec["store"], "store")
    steps = spec["steps"]
    if not isinstance(steps, list) or not steps:
        _fail("steps", "must be a non-empty list")
    seen: dict[str, str] = {}
    for i, step in enumerate(steps):
        field = f"steps[{i}]"
        _keys(step, field, _STEP_KEYS, ("action", "name"))
        action, name = step["action"], _str(step["name"], f"{field}.name")
        if action not in ACTIONS:
            _fail(f"{field}.action", f"must be one of {list(ACTIONS)}, got {action!r}")
        if name in seen:
            _fail(f"{field}.name", f"{name!r} is used twice")
        if name in (".", "..") or "/" in name or "\\" in name or name == "summary.json":
            _fail(f"{field}.name", f"must be a plain folder name, got {name!r}")
        args = step.get("args", {})
        if not isinstance(args, Mapping):
            _fail(f"{field}.args", "must be a JSON object")
        af = f"{field}.args"
        describes = [n for n, a in seen.items() if a == "describe"]
        if "seed" in args and (isinstance(args["seed"], bool) or not isinstance(args["seed"], int)):
            _fail(f"{af}.seed", f"must be an int, got {args['seed']!r}")
        if action == "describe":
            _keys(args, af, _DESCRIBE_ARGS)
            if "source" in args:
                _check_source(args["source"], f"{af}.source")
            if "store" in args:
                _str(args["store"], f"{af}.store")
        else:
            if not describes:
                _fail(f"{field}.action", f"{action!r} needs a describe step before it")
            for ref in ("store", "reference", "new"):
                if ref in args and args[ref] not in describes:
                    _fail(
                        f"{af}.{ref}",
                        f"must name an earlier describe step {describes}, got {args[ref]!r}",
                    )
            for ref in ("anchors", "labelled"):
                if isinstance(args.get(ref), str) and seen.get(args[ref]) != "select":
                    _fail(
                        f"{af}.{ref}",
                        f"must name an earlier select step or be a list of "
                        f"indices, got {args[ref]!r}",
                    )
        if action == "select":
            _signature_args(gj.select, af, args, {"seed", "store", "anchors"})
            if "size" not in args:
                _fail(f"{af}.size", "missing (required)")
        elif action == "split":
            _signature_args(gj.split, af, args, {"seed", "store"})
            if "sets" not in args:
                _fail(f"{af}.sets", "missing (required)")
        elif action == "curate":
            kind = args.get("kind")
            if kind not in CURATE_KINDS:
                _fail(f"{af}.kind", f"must be one of {list(CURATE_KINDS)}, got {kind!r}")
            _signature_args(getattr(gj, kind), af, args, {"kind", "store"})
        elif action == "drift":
            if "new" not in args:
                _fail(f"{af}.new", "missing (required): the name of a describe step")
            extra = {"seed", "reference", "new", "monitoring_size", "labelled"}
            _signature_args(drift_fn, af, args, extra)
        seen[name] = action


# ---------------------------------------------------------------------------------------------
# pieces


def save_variables(path, variables) -> None:
    """Writes a model's variables as an Orbax checkpoint directory a spec can name."""
    import orbax.checkpoint as ocp

    ckpt = ocp.StandardCheckpointer()
    ckpt.save(os.path.abspath(os.fspath(path)), variables)
    ckpt.wait_until_finished()


def _digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


def _tree_paths(tree, prefix="") -> dict:
    if isinstance(tree, Mapping):
        out = {}
        for k, v in tree.items():
            out.update(_tree_paths(v, f"{prefix}/{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _relative(v, root: str):
    """``v`` with paths inside ``root`` made relative to it: outputs do not depend on where
    the run's folder is."""
    if isinstance(v, str) and (v == root or v.startswith(root + os.sep)):
        return os.path.relpath(v, root)
    if isinstance(v, Mapping):
        return {k: _relative(x, root) for k, x in v.items()}
    if isinstance(v, list):
        return [_relative(x, root) for x in v]
    return v


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _store_kv(store):
    import tensorstore as ts

    from goldener_jax.store import kvstore_spec

    return ts.KvStore.open(kvstore_spec(store.path)).result()


def _store_problem(path: str, extractor_fingerprint: str) -> str | None:
    """Why the store of a describe step cannot be taken as done (None when it can): no store,
    an unreadable manifest, another extractor's store, a batch not done, a done batch's chunk
    missing. Cheap (the manifest, the done flags, one listing): chunks are not read, so a chunk
    that fails its checksum is found by the step that reads it (see :meth:`Pipeline.run`)."""
    from goldener_jax.store import FeatureStore

    try:
        store = FeatureStore.open(path)
    except FileNotFoundError:
        return f"there is no store at {path!r}"
    except (ValueError, OSError) as e:  # StoreCorruptError is a ValueError
        reason = str(e).split("; pass overwrite=True")[0].split("; run describe again")[0]
        return f"its store cannot be opened ({reason})"
    if store.extractor_fingerprint != extractor_fingerprint:
        return f"the store at {path!r} was written with another extractor"
    done = store.done_batches()
    if not done.all():
        return f"{int((~done).sum())} of the {done.size} batches of {path!r} are not done"
    missing = store.missing_chunks()
    if missing:
        return f"chunk {next(iter(missing.values()))!r} of {path!r} is missing"
    return None


def _store_content(path: str) -> str | None:
    """A digest of what the store at ``path`` holds, for the steps that read it: its manifest and
    the crc32c checksum that ends every chunk (zarr's ``crc32c`` codec), read as 4-byte suffixes
    rather than whole chunks. A describe step that runs again (to resume or repair its store)
    thus only makes its readers run again when the vectors came out different. None for stores
    written before chunk checksums (their readers then depend on the step's config alone)."""
    from goldener_jax.store import FeatureStore

    store = FeatureStore.open(path)
    if not store.has_checksums:
        return None
    kv = _store_kv(store)
    h = hashlib.sha256(json.dumps(store.manifest, sort_keys=True).encode())
    keys = [k for b in range(store.num_batches) for k in sorted(store.batch_chunk_keys(b).values())]
    window = 4096  # reads in flight
    read = 0
    for i in range(0, len(keys), window):
        part = keys[i : i + window]
        futures = [kv.read(k, byte_range=slice(-4, None)) for k in part]
        for key, future in zip(part, futures, strict=True):
            try:
                result = future.result()
                tail = result.value if result.state == "value" else b"missing"
                read += result.state == "value"
            except ValueError:  # a chunk shorter than its checksum
                tail = b"unreadable"
            h.update(key.encode() + b"\0" + tail)
    if keys and not read:  # no checksum could be read (a kvstore without suffix reads?)
        return None
    return h.hexdigest()[:32]


def _same_store(manifest: Mapping, extractor_fingerprint: str, source, args: Mapping) -> bool:
    """Whether ``describe`` would resume the store of ``manifest`` for these settings rather
    than refuse it as another configuration's."""
    source_fp = json.loads(json.dumps(source.fingerprint()))
    layout = manifest.get("layout", {})
    return (
        manifest.get("extractor", {}).get("fingerprint") == extractor_fingerprint
        and manifest.get("source") == source_fp
        and layout.get("dtype") == args.get("dtype", "float32")
        and ("batch_size" not in args or layout.get("batch_size") == args["batch_size"])
    )


class _DamagedStore(Exception):
    """A step found the store of describe steps ``steps`` damaged (raised inside ``run``)."""

    def __init__(self, step: str, steps: frozenset, error: Exception):
        super().__init__(str(error))
        self.step, self.steps, self.error = step, steps, error


@dataclasses.dataclass
class RunSummary:
    """What :meth:`Pipeline.run` did: one entry per step, ``status`` ``"ran"`` or ``"reused"``."""

    out_dir: str
    steps: list

    @property
    def ran(self) -> list:
        return [s["name"] for s in self.steps if s["status"] == "ran"]

    @property
    def reused(self) -> list:
        return [s["name"] for s in self.steps if s["status"] == "reused"]

    def text(self) -> str:
        lines = [f"pipeline outputs in {self.out_dir}"]
        for s in self.steps:
            lines.append(
                f"  {s['name']:<20} {s['action']:<9} {s['status']:<7} {s['seconds']:7.2f} s  "
                f"{s['fingerprint'][:12]}"
            )
        lines.append(f"ran {len(self.ran)}, reused {len(self.reused)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"out_dir": self.out_dir, "steps": self.steps, "ran": self.ran,
                "reused": self.reused}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the pipeline


class Pipeline:
    """A validated pipeline spec (see the module docstring).

    Args:
      spec: the spec as a dict (copied).
      base_dir: folder that relative source / variables paths are relative to (the spec
        file's folder for :meth:`load`; the working directory when ``None``).
    """

    def __init__(self, spec: Mapping, base_dir=None):
        spec = copy.deepcopy(dict(spec)) if isinstance(spec, Mapping) else spec
        validate(spec)
        self.spec = spec
        self.base_dir = os.path.abspath(os.fspath(base_dir)) if base_dir is not None else None
        self._extractor = None

    @classmethod
    def load(cls, path) -> Pipeline:
        """Reads and validates a spec file (JSON)."""
        path = os.fspath(path)
        with open(path) as f:
            try:
                spec = json.load(f)
            except json.JSONDecodeError as e:
                raise SpecError(f"spec: {path!r} is not valid JSON ({e})") from e
        return cls(spec, base_dir=os.path.dirname(os.path.abspath(path)))

    def save(self, path) -> None:
        """Writes the spec as indented JSON (paths as they were given)."""
        _write_json(os.fspath(path), self.spec)

    def __repr__(self) -> str:
        names = [f"{s['action']}:{s['name']}" for s in self.spec["steps"]]
        return f"Pipeline(version={self.spec['version']}, steps={names})"

    # -- inputs

    def _path(self, p: str) -> str:
        if os.path.isabs(p) or "://" in p:
            return p
        return os.path.join(self.base_dir or os.getcwd(), p)

    def _source(self, src: Mapping, field: str):
        import goldener_jax as gj

        keys = {k: src[k] for k in ("data_key", "label_key", "group_key", "mask_key") if k in src}
        if src["kind"] == "arrays":
            path = self._path(src["path"])
            if not os.path.isfile(path):
                _fail(f"{field}.path", f"no such file {path!r}")
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
            key = keys.get("data_key", "image")
            if key not in data:
                _fail(f"{field}.data_key", f"{key!r} is not an array of {path!r} ({sorted(data)})")
            for k in ("label_key", "group_key", "mask_key"):
                if keys.get(k) is not None and keys[k] not in data:
                    _fail(f"{field}.{k}", f"{keys[k]!r} is not an array of {path!r}")
            name = os.path.basename(path)
            return gj.ArraySource(data, name=name, **keys), {"file": _file_digest(path)}
        kw = {k: src[k] for k in ("split", "data_dir") if k in src}
        if "data_dir" in kw and kw["data_dir"] is not None:
            kw["data_dir"] = self._path(kw["data_dir"])
        return gj.TFDSSource(src["name"], **kw, **keys), {}

    def extractor(self, example=None):
        """The :class:`~goldener_jax.FeatureExtractor` the spec describes (built once). The
        variables are checked against the model's, initialised on ``example`` (one batch of
        model input; the source's first sample when ``None``)."""
        if self._extractor is not None:
            return self._extractor
        import jax
        import orbax.checkpoint as ocp

        import goldener_jax as gj

        ex = self.spec["extractor"]
        factory = _import_factory(ex["model"], "extractor.model")
        try:
            model = factory(**ex.get("model_args", {}))
        except TypeError as e:
            _fail("extractor.model_args", f"the factory {ex['model']!r} refused them: {e}")
        path = self._path(ex["variables"])
        if not os.path.isdir(path):
            _fail("extractor.variables", f"no Orbax checkpoint directory at {path!r}")
        try:
            variables = ocp.StandardCheckpointer().restore(path)
        except Exception as e:  # Orbax raises many kinds
            _fail("extractor.variables", f"cannot restore {path!r}: {type(e).__name__}: {e}")
        if example is None:
            source, _ = self._source(self.spec["source"], "source")
            data_key = self.spec["source"].get("data_key", "image")
            _, batch = next(iter(source.iter_batches(1, [0])))
            example = batch[data_key]
        if hasattr(model, "init"):
            expected = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), example)
            want = {p: (tuple(v.shape), str(v.dtype)) for p, v in _tree_paths(expected).items()}
            got = {p: (tuple(np.shape(v)), str(v.dtype)) for p, v in
                   _tree_paths(variables).items()}  # fmt: skip
            for p in sorted(set(want) | set(got)):
                if p not in got:
                    _fail(
                        "extractor.variables",
                        f"{path!r} lacks {p!r}, which the model "
                        f"{ex['model']!r} has (shape {want[p][0]})",
                    )
                if p not in want:
                    _fail(
                        "extractor.variables",
                        f"{path!r} has {p!r}, which the model {ex['model']!r} does not have",
                    )
                if want[p][0] != got[p][0]:
                    _fail(
                        "extractor.variables",
                        f"{p!r} has shape {got[p][0]} in {path!r}, "
                        f"the model {ex['model']!r} expects {want[p][0]}",
                    )
        layers = ex["layers"]

        def layer(item):
            if isinstance(item, Mapping):
                item = dict(item)
                if isinstance(item.get("output"), list):
                    item["output"] = tuple(item["output"])
                return gj.Layer(**item)
            return item

        if isinstance(layers, Mapping):
            layers = {g: [layer(v) for v in vs] for g, vs in layers.items()}
        elif isinstance(layers, list):
            layers = [layer(v) for v in layers]
        kw = {k: ex[k] for k in ("fusion", "group_fusion", "method", "channel_axis",
                                 "resize_method", "apply_kwargs") if k in ex}  # fmt: skip
        if "vectorizer" in ex and ex["vectorizer"] is not None:
            vec = dict(ex["vectorizer"])
            if isinstance(vec.get("grid"), list):
                vec["grid"] = tuple(vec["grid"])
            try:
                kw["vectorizer"] = gj.Vectorizer(**vec)
            except (TypeError, ValueError) as e:
                _fail("extractor.vectorizer", str(e))
        try:
            self._extractor = gj.FeatureExtractor(
                model=model, variables=variables, layers=layers, **kw
            )
        except (TypeError, ValueError) as e:
            _fail("extractor", str(e))
        return self._extractor

    # -- running

    def run(self, out_dir, *, progress: bool = False) -> RunSummary:
        """Runs the steps not done yet for their current inputs (see the module docstring)."""
        out_dir = os.path.abspath(os.fspath(out_dir))
        os.makedirs(out_dir, exist_ok=True)
        ran: dict[str, float] = {}  # steps that ran in any pass, and their seconds
        repaired: set[str] = set()
        force: frozenset = frozenset()
        while True:
            try:
                return self._run(out_dir, progress, force, ran)
            except _DamagedStore as damaged:
                # A chunk failing its checksum passes the cheap check of a describe step's
                # store; the step reading it finds it. Its describe steps run again (describe
                # verifies every chunk and re-does the damaged batches), then the whole run
                # again: the steps after a repaired store are reused when its content came out
                # the same.
                if damaged.steps <= repaired:
                    raise self._unrepaired(damaged, out_dir) from damaged.error
                force = damaged.steps - repaired
                repaired |= damaged.steps
                warnings.warn(
                    f"step {damaged.step!r}: {damaged.error}; running describe step(s) "
                    f"{sorted(force)} again to repair it",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def _unrepaired(self, damaged: _DamagedStore, out_dir: str) -> Exception:
        from goldener_jax.store import StoreCorruptError

        paths = [self._store_path(n, out_dir) for n in sorted(damaged.steps)]
        text = str(damaged.error).split("; run describe again")[0]
        return StoreCorruptError(
            f"step {damaged.step!r}: {text}; its describe step(s) {sorted(damaged.steps)} ran "
            f"again and could not repair it: delete {', '.join(map(repr, paths))} and run the "
            "pipeline again (describe then starts the store over)",
            batches=getattr(damaged.error, "batches", ()),
        )

    def _store_path(self, name: str, out_dir: str) -> str:
        args = next(s for s in self.spec["steps"] if s["name"] == name).get("args", {})
        rel = args.get("store", self.spec.get("store", "store"))
        return rel if os.path.isabs(rel) or "://" in rel else os.path.join(out_dir, rel)

    def _run(self, out_dir: str, progress: bool, force: frozenset, ran: dict) -> RunSummary:
        """One pass over the steps; ``force``: describe steps to run even if done (their store
        was found damaged); ``ran``: steps run by earlier passes of the same call."""
        from goldener_jax import __version__ as version
        from goldener_jax.store import StoreCorruptError

        # What the steps reading an earlier step's output depend on: a select step's
        # fingerprint; a describe step's store content (its fingerprint for older stores).
        fingerprints: dict[str, str] = {}
        stores: dict[str, str] = {}
        entries = []
        for i, step in enumerate(self.spec["steps"]):
            name, action = step["name"], step["action"]
            args = dict(step.get("args", {}))
            step_dir = os.path.join(out_dir, name)
            inputs = self._inputs(action, args, fingerprints)
            # The library's version counts as an input: another release may compute otherwise.
            config = {"action": action, "args": args, "inputs": inputs, "library": version}
            if action == "describe":
                src_spec = args.get("source", self.spec["source"])
                store_rel = args.get("store", self.spec.get("store", "store"))
                field = f"steps[{i}].args.source" if "source" in args else "source"
                source, file_fp = self._source(src_spec, field)
                config["source"] = {"spec": src_spec, **file_fp, "read": source.fingerprint()}
                config["extractor"] = self.extractor().fingerprint
                config["store"] = store_rel
                stores[name] = self._store_path(name, out_dir)
            fp = _digest(config)
            done = os.path.join(step_dir, "step.json")
            started = os.path.join(step_dir, "started.json")
            record = _read_json(done) if os.path.isfile(done) else None
            start = time.perf_counter()
            reuse = record is not None and record.get("fingerprint") == fp and name not in force
            if reuse and action == "describe":
                # step.json says the store was complete; it may have been damaged or deleted
                # since: then describe runs again (it resumes, re-doing what is missing).
                problem = _store_problem(stores[name], config["extractor"])
                if problem is not None:
                    warnings.warn(
                        f"describe step {name!r}: {problem}; describing again",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    reuse = False
            if reuse:
                status = "ran" if name in ran else "reused"
                content = record.get("content")
                if action == "describe" and content is None:  # recorded by an older version
                    content = _store_content(stores[name])
                    if content is not None:
                        _write_json(done, {**record, "content": content})
            else:
                # The pipeline owns the store of a describe step whose records name it: a
                # changed config replaces it, changed samples are described again.
                recorded = []
                if record is not None:
                    recorded.append(record.get("config", {}).get("store"))
                if os.path.isfile(started):
                    recorded.append(_read_json(started).get("store"))
                if os.path.isdir(step_dir):
                    same = os.path.isfile(started) and _read_json(started).get("fingerprint") == fp
                    if not same:  # another config's leftovers: never mix them in
                        shutil.rmtree(step_dir)
                os.makedirs(step_dir, exist_ok=True)
                if os.path.isfile(done):  # not done until this run says so
                    os.remove(done)
                begun = {"fingerprint": fp}
                if action == "describe":
                    begun["store"] = store_rel
                _write_json(started, begun)
                content = None
                if action == "describe":
                    owned = store_rel in recorded
                    self._describe(args, source, stores[name], step_dir, progress, name, owned)
                    content = _store_content(stores[name])
                else:
                    try:
                        getattr(self, "_" + action)(args, stores, step_dir, out_dir, progress)
                    except StoreCorruptError as e:
                        reads = frozenset(self._reads(action, args, stores))
                        raise _DamagedStore(name, reads, e) from e
                    except (TypeError, ValueError) as e:  # e.g. split sets that do not sum to 1
                        raise _in_step(e, i, name, action) from e
                result = {"name": name, "fingerprint": fp, "config": _jsonable(config)}
                if content is not None:
                    result["content"] = content
                _write_json(done, result)
                status = "ran"
                ran[name] = ran.get(name, 0.0)
            seconds = time.perf_counter() - start
            if status == "ran":
                ran[name] += seconds
                seconds = ran[name]
            fingerprints[name] = content if action == "describe" and content else fp
            entries.append({
                "name": name, "action": action, "status": status, "fingerprint": fp,
                "seconds": round(seconds, 3),
            })  # fmt: skip
        summary = RunSummary(out_dir=out_dir, steps=entries)
        _write_json(os.path.join(out_dir, "summary.json"), summary.to_dict())
        return summary

    @staticmethod
    def _reads(action, args, stores) -> list:
        """The describe steps whose stores a step reads (``stores``: those before it)."""
        describes = list(stores)
        if action == "drift":
            return [args.get("reference", describes[0]), args["new"]]
        return [args.get("store", describes[-1])]

    def _inputs(self, action, args, fingerprints) -> dict:
        describes = [n for n, a in self._actions() if a == "describe" and n in fingerprints]
        if action == "describe":
            return {}
        inputs = {}
        if action == "drift":
            inputs["reference"] = fingerprints[args.get("reference", describes[0])]
            inputs["new"] = fingerprints[args["new"]]
        else:
            inputs["store"] = fingerprints[args.get("store", describes[-1])]
        for ref in ("anchors", "labelled"):
            if isinstance(args.get(ref), str):
                inputs[ref] = fingerprints[args[ref]]
        return inputs

    def _actions(self):
        return [(s["name"], s["action"]) for s in self.spec["steps"]]

    def _store_of(self, args, stores, key="store"):
        from goldener_jax.store import FeatureStore

        describes = [n for n, a in self._actions() if a == "describe" and n in stores]
        default = describes[0] if key == "reference" else describes[-1]
        return FeatureStore.open(stores[args.get(key, default)])

    @staticmethod
    def _indices_of(value, out_dir):
        if isinstance(value, str):
            sel = _read_json(os.path.join(out_dir, value, "selection.json"))
            return np.asarray(sel["indices"], np.int64)
        return np.asarray(value, np.int64)

    @staticmethod
    def _key(args):
        import jax

        return jax.random.key(int(args.get("seed", 0)))

    @staticmethod
    def _rest(args, drop) -> dict:
        return {k: v for k, v in args.items() if k not in drop}

    def _describe(self, args, source, store_path, step_dir, progress, name, owned):
        """Describes into ``store_path``, resuming (and repairing) what is there. ``owned``: this
        step wrote that store before (its records name it), so a store of another
        configuration is this step's old output and is replaced, and samples whose source
        changed are described again; a store the pipeline did not write is never replaced."""
        import goldener_jax as gj
        from goldener_jax.store import FeatureStore, StoreCorruptError, StoreMismatchError

        extractor = self.extractor()
        kw = self._rest(args, {"source", "store"})
        overwrite = False
        if owned:
            try:
                manifest = FeatureStore.peek_manifest(store_path)
            except StoreCorruptError:
                manifest, overwrite = None, True
            if manifest is not None:
                overwrite = not _same_store(manifest, extractor.fingerprint, source, args)
        try:
            store = gj.describe(
                source, extractor, store_path, progress=progress, overwrite=overwrite,
                redescribe_changed=owned, **kw,
            )  # fmt: skip
        except (StoreCorruptError, StoreMismatchError) as e:
            # Their advice names describe's arguments (overwrite=True ...), which a spec cannot
            # pass: say what to do with the pipeline.
            fix = (
                f"delete {store_path!r} and run the pipeline again (describe then starts the "
                "store over)"
                if owned
                else f"the pipeline did not write {store_path!r}, so it does not replace it: "
                "name another store in the spec, or delete that one, and run it again"
            )
            raise type(e)(f"describe step {name!r}: {e} -- {fix}") from e
        _write_json(os.path.join(step_dir, "describe.json"), {
            "num_samples": int(store.num_samples), "num_rows": int(store.num_rows),
            "dim": int(store.dim), "extractor_fingerprint": store.extractor_fingerprint,
        })  # fmt: skip

    def _select(self, args, stores, step_dir, out_dir, progress):
        import goldener_jax as gj

        kw = self._rest(args, {"seed", "store", "anchors", "size"})
        if "anchors" in args:
            kw["anchors"] = self._indices_of(args["anchors"], out_dir)
        sel = gj.select(
            self._store_of(args, stores), args["size"], key=self._key(args),
            checkpoint_dir=os.path.join(step_dir, "checkpoint"), **{"progress": progress, **kw},
        )  # fmt: skip
        _write_json(os.path.join(step_dir, "selection.json"), {
            "indices": _jsonable(sel.indices), "label_counts": _jsonable(sel.label_counts),
            "coverage_radius": sel.coverage_radius,
            "config": _relative(_jsonable(sel.config), out_dir),
        })  # fmt: skip

    def _split(self, args, stores, step_dir, out_dir, progress):
        import goldener_jax as gj

        kw = self._rest(args, {"seed", "store", "sets"})
        result = gj.split(
            self._store_of(args, stores), args["sets"], key=self._key(args),
            checkpoint_dir=os.path.join(step_dir, "checkpoint"), manifest_path=False,
            **{"progress": progress, **kw},
        )  # fmt: skip
        _write_json(os.path.join(step_dir, "split.json"), {
            "sets": {k: _jsonable(v) for k, v in result.items()},
            "leaks": _jsonable(result.leaks),
        })  # fmt: skip

    def _curate(self, args, stores, step_dir, out_dir, progress):
        import goldener_jax as gj

        fn = getattr(gj, args["kind"])
        kw = self._rest(args, {"kind", "store"})
        result = fn(self._store_of(args, stores), progress=progress, **kw)
        _write_json(
            os.path.join(step_dir, "curate.json"), _relative(_jsonable(result.to_json()), out_dir)
        )

    def _drift(self, args, stores, step_dir, out_dir, progress):
        from goldener_jax.drift import drift, monitoring_selection

        reference = self._store_of(args, stores, "reference")
        new = self._store_of(args, stores, "new")
        kw = self._rest(args, {"seed", "reference", "new", "monitoring_size", "labelled"})
        report = drift(reference, new, key=self._key(args), **kw)
        report.to_json(os.path.join(step_dir, "drift.json"))
        report.plot(os.path.join(step_dir, "drift.png"))
        np.savez(
            os.path.join(step_dir, "per_sample.npz"), new_ids=report.new_ids,
            new_nearest=report.new_nearest, new_cluster=report.new_cluster,
        )  # fmt: skip
        if "monitoring_size" in args:
            labelled = args.get("labelled")
            if labelled is not None:
                labelled = self._indices_of(labelled, out_dir)
            picked = monitoring_selection(
                reference, new, args["monitoring_size"], labelled=labelled,
                key=self._key(args), metric=kw.get("metric", "euclidean"),
            )  # fmt: skip
            _write_json(os.path.join(step_dir, "monitoring.json"), {"indices": _jsonable(picked)})


def main(argv=None) -> int:
    """``python -m goldener_jax.workflow PIPELINE --out DIR``: run or resume, print the
    summary."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m goldener_jax.workflow")
    parser.add_argument("pipeline", help="the pipeline spec (JSON)")
    parser.add_argument("--out", required=True, help="output folder (reused on rerun)")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    args = parser.parse_args(argv)
    summary = Pipeline.load(args.pipeline).run(args.out, progress=args.progress)
    print(summary.text(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _in_step(error: Exception, index: int, name: str, action: str) -> Exception:
    """``error`` of a step's own arguments, its message prefixed with where they are in the spec
    (the same type when it can be built from a message, else a ValueError)."""
    text = f"steps[{index}] ({name!r}, {action}): {error}"
    try:
        return type(error)(text)
    except Exception:  # an error class whose constructor wants more than a message
        return ValueError(text)
