"""``split(method="auto")``: representative sets, a stratified sample of the whole at the
resolution of k-means cells; with labels, the hard units paired before the deal, a pair to
train whole or split between validation and test (see :func:`representative_assignment`).

On a mesh spanning several processes with a store (``Data.source``: rows read per process), no
process reads every vector at once:
the k-means runs on the rows each process reads for its own devices (``kmeans(..., n=)``; for
cosine each process scales its own rows first) and the cell ids (``[U]`` ints) are gathered;
the nearest-neighbour chains read their rows a run at a time (at most 512 units) and the
difficulty a piece of :data:`_PIECE_BYTES` at a time, each run and piece made on one process
(round robin) and the results gathered on every process. Every step is the single-process step
on the same rows, so the split equals the single-process one (up to k-means on a mesh, whose
centroid sums add in another order: see ``kernels.kmeans``). The difficulty's ridge fit still
needs the ``[U, min(d, 256)]`` float32 (projected) unit vectors on every process. The
projection is taken in fixed pieces of :data:`_PIECE_BYTES` on one process too (XLA's float32
GEMM rounds a row differently for different row counts): identical to one product over all
rows when they fit one piece. With groups or several vectors per sample a unit's vector is
the mean of its vectors: each run, piece or device's rows then reads those units' vectors and
averages them on the host as one process does (float64 sums in vector order), so a piece holds
every vector of its units.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from goldener_jax import kernels as gk
from goldener_jax._allocation import assign_groups_to_sets
from goldener_jax.kernels.distance import auto_block
from goldener_jax.pipeline.data import Data, key_data, release_freed_memory, trim_heap

__all__ = ["AutoSplitOptions", "deal", "representative_assignment"]

# difficulty (best other label's ridge score minus its own, targets +-1) above which a unit is hard
HARD_MARGIN = -1.0
# Bytes of float32 unit vectors per piece: of the difficulty's projection (a product per piece
# of this many rows, the last one padded: the same products on one process and on several, as
# XLA's GEMM rounds a row differently for different row counts) and of the rows read per process
_PIECE_BYTES = 32 << 20
# Widths above this are projected before the ridge fit of the difficulty
_RIDGE_WIDTH = 256


@dataclasses.dataclass(frozen=True)
class AutoSplitOptions:
    """``split(method="auto")``'s ``method_options``: k-means cells of about ``cell_size``
    units (None: ``max(4, ceil(N / smallest set))``), at most ``max_cells`` cells,
    ``num_iters`` Lloyd iterations (fewer cells for vectors wider than 4,096: at most
    2^20 centroid values)."""

    cell_size: int | None = None
    # 256, not 4096: the nearest-neighbour chain inside a cell gives the fine resolution, and
    # 4,096 cells made k-means ~80 % of a 50,000 x 256 split (k-means++ seeding is sequential)
    max_cells: int = 256
    num_iters: int = 20


def _units(data) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(unit of each sample [S], unit of each vector [Nv], samples per unit [U], whether vector
    ``u`` is unit ``u``'s only vector for every unit)."""
    num_samples = data.sample_ids.shape[0]
    unit = np.arange(num_samples) if data.unit is None else np.asarray(data.unit)
    num_units = int(unit.max()) + 1
    vec_unit = unit[data.vec_sample]
    size = np.bincount(unit, minlength=num_units)
    one = data.num_vectors == num_units and np.array_equal(vec_unit, np.arange(num_units))
    return unit, vec_unit, size, one


def _unit_vectors(data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit of each sample [S], vectors of the units [U, d] (mean of their vectors), samples per
    unit [U])."""
    unit, vec_unit, size, one = _units(data)
    num_units = size.shape[0]
    if one:
        return unit, np.asarray(data.x, np.float32), size
    order = np.argsort(vec_unit, kind="stable")
    starts = np.searchsorted(vec_unit[order], np.arange(num_units))
    sums = np.add.reduceat(np.asarray(data.x[order], np.float64), starts, axis=0)
    per = np.bincount(vec_unit, minlength=num_units)
    return unit, (sums / per[:, None]).astype(np.float32), size


def _unit_strata(data, unit: np.ndarray, num_units: int) -> np.ndarray:
    """Stratum of each unit: its label (for a group or multi-hot labels, the rarest label among
    its samples); -1 without labels."""
    if data.label_matrix is None:
        return np.zeros(num_units, np.int64)
    lm = np.asarray(data.label_matrix, bool)
    freq = lm.sum(axis=0)
    # rarest label of each sample (ties to the lower column), samples without a label: -1
    rank = np.argsort(np.argsort(freq, kind="stable"), kind="stable")
    masked = np.where(lm, rank[None, :], lm.shape[1])
    best = masked.min(axis=1)
    per_unit = np.full(num_units, lm.shape[1], np.int64)
    np.minimum.at(per_unit, unit, best)
    order_to_col = np.argsort(rank)
    return np.where(per_unit < lm.shape[1], order_to_col[np.minimum(per_unit, lm.shape[1] - 1)], -1)


def _piece_rows(num_units: int, dim: int) -> int:
    """Rows per piece of :data:`_PIECE_BYTES` float32 unit vectors (all of them when fewer)."""
    return auto_block(4 * dim, num_units, budget=_PIECE_BYTES)


def _projected(read, num_units: int, proj, spread) -> np.ndarray:
    """``[U, 256]`` float32: the unit vectors (``read(a, b)``: float32 rows ``a:b``) times
    ``proj``, one float32 product (exact passes) per piece of :func:`_piece_rows` rows, the last
    piece padded with zero rows to the same shape: a row's product then never depends on where
    the pieces are taken. ``spread(count, make, dtype, tail)``: the pieces ``make(j)``,
    ``j < count``, each computed once (here, or on one process of several) and returned in
    order."""
    dim = proj.shape[0]
    piece = _piece_rows(num_units, dim)
    count = -(-num_units // piece)
    hi = jax.lax.Precision.HIGHEST
    p = jnp.asarray(proj, jnp.float32)

    def make(j):
        a, b = j * piece, min(num_units, (j + 1) * piece)
        v = read(a, b)
        if b - a < piece:
            v = np.concatenate([v, np.zeros((piece - (b - a), dim), np.float32)])
        return np.asarray(jnp.matmul(jnp.asarray(v), p, precision=hi))

    return np.concatenate(spread(count, make, np.float32, (proj.shape[1],)))[:num_units]


def _projection(rng: np.random.Generator, dim: int) -> np.ndarray:
    """float32 ``[dim, 256]`` Gaussian directions over ``sqrt(256)``: drawn a few MB at a time,
    the values (and what ``rng`` draws next) of one float64 draw cast to float32, without the
    float64 ``[dim, 256]`` copy (268 MB at 131,072 dims)."""
    out = np.empty((dim, _RIDGE_WIDTH), np.float32)
    step = max(1, (8 << 20) // (8 * _RIDGE_WIDTH))
    for a in range(0, dim, step):
        b = min(dim, a + step)
        out[a:b] = rng.standard_normal((b - a, _RIDGE_WIDTH)) / np.sqrt(float(_RIDGE_WIDTH))
    return out


def _spread_here(count, make, dtype=None, tail=()) -> list:
    """``[make(j) for j < count]``: every piece made here (one process)."""
    return [make(j) for j in range(count)]


def _difficulty(ux: np.ndarray, strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Difficulty of each unit [U]: the best other stratum's score minus its own under a ridge
    one-vs-rest linear fit (targets +-1, L2 1.0, with intercept) of the stratum on the unit
    vectors; 0 for a unit without a stratum. Above 0: the linear fit gets it wrong. Vectors
    wider than 256 are first projected on 256 Gaussian directions (the fit stays O(U d^2))."""
    return _difficulty_of(lambda a, b: ux[a:b], ux.shape[0], ux.shape[1], strata, rng, _spread_here)


def _difficulty_of(read, num_units, dim, strata, rng, spread) -> np.ndarray:
    """:func:`_difficulty` of the unit vectors ``read(a, b)`` (float32 rows ``a:b`` of
    ``[num_units, dim]``), read in pieces; ``spread`` as in :func:`_projected`."""
    labelled = strata >= 0
    classes = np.unique(strata[labelled])
    out = np.zeros(strata.shape[0])
    if classes.size < 2:
        return out
    # the O(U d^2) products in XLA (float32, exact passes): NumPy's threaded float64 BLAS next
    # to JAX's threads was ~50x slower on a small machine
    hi = jax.lax.Precision.HIGHEST
    if dim > _RIDGE_WIDTH:
        proj = _projection(rng, dim)
        v = jnp.asarray(_projected(read, num_units, proj, spread))
    elif spread is _spread_here:  # one process: the rows as they are, no copy
        v = jnp.asarray(read(0, num_units), jnp.float32)
    else:
        piece = _piece_rows(num_units, dim)
        count = -(-num_units // piece)
        parts = spread(
            count,
            lambda j: np.asarray(read(j * piece, min(num_units, (j + 1) * piece)), np.float32),
            np.float32,
            (dim,),
        )
        v = jnp.asarray(parts[0] if count == 1 else np.concatenate(parts), jnp.float32)
    v = jnp.concatenate([v - v.mean(0), jnp.ones((v.shape[0], 1), jnp.float32)], axis=1)
    col = np.searchsorted(classes, strata)
    targets = np.full((v.shape[0], classes.size), -1.0, np.float32)
    targets[labelled, col[labelled]] = 1.0
    gram = np.asarray(jnp.matmul(v.T, v, precision=hi), np.float64)
    rhs = np.asarray(jnp.matmul(v.T, jnp.asarray(targets), precision=hi), np.float64)
    w = np.linalg.solve(gram + np.eye(gram.shape[0]), rhs)
    score = np.asarray(jnp.matmul(v, jnp.asarray(w, jnp.float32), precision=hi), np.float64)
    rows = np.flatnonzero(labelled)
    own = score[rows, col[rows]]
    score[rows, col[rows]] = -np.inf
    out[rows] = score[rows].max(axis=1) - own
    return out


def _rank_within(values: np.ndarray, strata: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Rank of each unit by ``values`` (descending) among the units of its stratum."""
    order = np.lexsort((tiebreak, -values, strata))
    rank = np.empty(order.size, np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(strata[order])) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, order.size]))
    rank[order] = np.arange(order.size) - first
    return rank


def deal(order: np.ndarray, size: np.ndarray, counts: list[int]) -> np.ndarray:
    """Set of each unit, dealing ``order`` in proportion to ``counts``.

    Unit ``t`` goes to the set furthest behind its share ``counts[i] x samples dealt / total``
    that still has room (lowest index on ties), so every run of consecutive units is shared
    between the sets in proportion to their sizes, up to about one unit per set. Units of one
    sample: the same sequence in closed form (slot ``j`` of set ``i`` at ``(j + 1/2) / c_i``).

    The totals are exactly ``counts`` whenever whole units can meet them: when the greedy deal
    does not, the units are packed (:func:`~goldener_jax._allocation.assign_groups_to_sets`),
    each set preferring the units the deal gave it (in ``order``), so only the units of the
    packing window change set; unreachable counts give the nearest reachable totals (the
    caller compares them with ``counts``).
    """
    counts_arr = np.asarray(counts, np.int64)
    total = int(counts_arr.sum())
    out = np.full(size.shape[0], -1, np.int64)
    if np.all(size[order] == 1):
        slots = np.concatenate([(np.arange(c) + 0.5) / c for c in counts_arr])
        owner = np.repeat(np.arange(len(counts_arr)), counts_arr)
        out[order] = owner[np.argsort(slots, kind="stable")]
        return out
    assigned = np.zeros_like(counts_arr)
    dealt = 0
    pending = []
    for u in order.tolist():
        s = int(size[u])
        dealt += s
        room = assigned + s <= counts_arr
        if not room.any():
            pending.append(u)
            continue
        deficit = counts_arr * (dealt / total) - assigned
        i = int(np.argmax(np.where(room, deficit, -np.inf)))
        out[u] = i
        assigned[i] += s
    placed = True
    for u in sorted(pending, key=lambda u: -int(size[u])):
        room = counts_arr - assigned
        i = int(np.argmax(room))
        if room[i] < size[u]:
            placed = False  # a group fits in no set: pack instead
            break
        out[u] = i
        assigned[i] += int(size[u])
    if placed and np.array_equal(assigned, counts_arr):
        return out
    mine = out[order][None, :] == np.arange(counts_arr.size)[:, None]
    prefs = np.stack([np.r_[order[m], order[~m]] for m in mine])
    return assign_groups_to_sets(size, counts_arr, order=prefs).set_of_group.astype(np.int64)


def _chain_pieces(order: np.ndarray, run_id: np.ndarray, max_run: int = 512) -> list:
    """``[a, b)`` positions along ``order`` of the pieces that :func:`_chain_runs` chains: each
    run of equal ``run_id`` cut into pieces of at most ``max_run`` units, those of 3 or more."""
    rid = run_id[order]
    bounds = np.flatnonzero(np.diff(rid)) + 1
    out = []
    for start, stop in zip(np.r_[0, bounds], np.r_[bounds, order.size], strict=True):
        for a in range(int(start), int(stop), max_run):
            b = min(int(stop), a + max_run)
            if b - a >= 3:
                out.append((a, b))
    return out


# Columns of a run's rows widened to float64 at a time by the chain's distances (a float64 copy
# of 512 rows of 131,072 values was 537 MB).
_CHAIN_COLUMNS = 8192


def _chain(v: np.ndarray) -> np.ndarray:
    """Nearest-neighbour chain through the rows ``v`` from row 0: positions in chain order.
    Distances in float64, ``_CHAIN_COLUMNS`` columns at a time (one piece up to that width)."""
    n, d = v.shape
    sq, gram = np.zeros(n), np.zeros((n, n))
    for a in range(0, d, _CHAIN_COLUMNS):
        part = v[:, a : a + _CHAIN_COLUMNS].astype(np.float64)
        sq += np.sum(part * part, axis=1)
        gram += part @ part.T
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
    chain = [0]
    used = np.zeros(v.shape[0], bool)
    used[0] = True
    for _ in range(v.shape[0] - 1):
        row = np.where(used, np.inf, dist[chain[-1]])
        nxt = int(np.argmin(row))
        chain.append(nxt)
        used[nxt] = True
    return np.asarray(chain)


def _chain_runs(order: np.ndarray, ux: np.ndarray, run_id: np.ndarray, max_run: int = 512):
    """Reorders each run of equal ``run_id`` along ``order`` as a nearest-neighbour chain (from
    its first unit, each next unit the nearest one not yet in the chain; pieces of at most
    ``max_run`` units), so that units dealt side by side (e.g. one to validation, one to test)
    are near twins."""
    out = order.copy()
    for a, b in _chain_pieces(order, run_id, max_run):
        idx = order[a:b]
        out[a:b] = idx[_chain(ux[idx])]
    return out


def _twin_partners(strata, difficulty, hard, rng) -> np.ndarray:
    """Partner of each unit [U] (-1: none): inside each label, the hard units ranked by
    difficulty (hardest first, ties in a random order) and paired, first with second, third
    with fourth, ...; an odd one out (the label's easiest hard unit) and units without a label
    stay single."""
    n = strata.size
    tiebreak = rng.permutation(n)
    partner = np.full(n, -1, np.int64)
    for s in np.unique(strata):
        if s < 0:
            continue
        h = np.flatnonzero((strata == s) & hard)
        h = h[np.lexsort((tiebreak[h], -difficulty[h]))]
        m = 2 * (h.size // 2)
        partner[h[0:m:2]], partner[h[1:m:2]] = h[1:m:2], h[0:m:2]
    return partner


def _error_odds(difficulty: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-4.0 * np.clip(difficulty, -20, 20)))


def _orient(pairs, difficulty, rng) -> list[tuple[int, int]]:
    """``(unit for set 0, unit for set 1)`` of each pair: in a random order, each pair puts its
    harder unit in the set whose running sum of error odds (``sigmoid(4 x difficulty)``) is
    lower (a coin on equal sums), so both sets get the same expected errors."""
    odds = _error_odds(difficulty)
    load = np.zeros(2)
    out = [(0, 0)] * len(pairs)
    for p in rng.permutation(len(pairs)):
        u, v = pairs[p]
        if odds[v] > odds[u]:
            u, v = v, u
        first = int(rng.integers(2)) if load[0] == load[1] else int(np.argmin(load))
        out[p] = (u, v) if first == 0 else (v, u)
        load[first] += odds[u]
        load[1 - first] += odds[v]
    return out


def _deal_twins(order, size, counts, difficulty, hard, strata, rng):
    """The deal with the hard units as twins: set of each unit [U], or None where it does not
    apply (not exactly two held-out sets of equal size, within one; groups; no pair; counts
    the pairs cannot meet).

    The hard units are paired first, over the whole of each label (:func:`_twin_partners`),
    and a pair is dealt as one item at the place of its member met first along ``order``: to
    the train set (the largest) whole, or split between the two held-out sets (e.g. validation
    and test), one twin each, oriented by :func:`_orient`. The other units are dealt as by
    :func:`deal`, first between train and the held-out sets together, then between the two
    held-out sets along the same order. So a hard held-out unit always has its twin, the next
    hardest of its label, in the other held-out set; pairing only the hard units the deal
    happened to send to validation and test (:func:`_pair_held_out`) matched them with whatever
    the held-out sets held, on small data often a much easier unit or none. One twin each is a
    proportional share only for held-out sets of equal size, hence the restriction; a pair
    dealt as one item moves a label's count in a set by at most one more unit than the plain
    deal."""
    counts = np.asarray(counts, np.int64)
    largest = int(np.argmax(counts))
    held_sets = [i for i in range(counts.size) if i != largest and counts[i] > 0]
    if len(held_sets) != 2 or abs(int(counts[held_sets[0]] - counts[held_sets[1]])) > 1:
        return None
    if not np.all(size == 1):
        return None
    partner = _twin_partners(strata, difficulty, hard, rng)
    if not np.any(partner >= 0):
        return None
    pos = np.empty(order.size, np.int64)
    pos[order] = np.arange(order.size)
    lead = (partner < 0) | (pos < pos[np.maximum(partner, 0)])  # a single, or the twin met first
    items = order[lead[order]]
    item_size = np.where(partner[items] >= 0, 2, 1)
    held_total = int(counts[held_sets].sum())
    top = deal(np.arange(items.size), item_size, [int(counts[largest]), held_total])
    held = items[top == 1]
    twins = held[partner[held] >= 0]
    singles = held[partner[held] < 0]
    left = counts[held_sets] - twins.size
    if int(item_size[top == 1].sum()) != held_total or np.any(left < 0):
        return None
    out = np.full(size.size, largest, np.int64)
    if singles.size:
        ones = np.ones(singles.size, np.int64)
        out[singles] = np.asarray(held_sets)[deal(np.arange(singles.size), ones, left.tolist())]
    pairs = [(int(u), int(partner[u])) for u in twins]
    for u, v in _orient(pairs, difficulty, rng):
        out[u], out[v] = held_sets[0], held_sets[1]
    # a label's count in a set at most one unit from the plain deal's (within two of its
    # proportional share): else the plain deal, with pairs formed after it
    base = deal(order, size, counts)
    labels = np.unique(strata)
    for i in range(counts.size):
        mine = np.searchsorted(labels, strata[out == i])
        theirs = np.searchsorted(labels, strata[base == i])
        moved = np.bincount(mine, minlength=labels.size) - np.bincount(
            theirs, minlength=labels.size
        )
        if np.abs(moved).max() > 1:
            return None
    return out


def _pair_held_out(unit_set, size, counts, strata, difficulty, hard, rng):
    """Re-deals the hard units of the two held-out sets (all but the largest, e.g. validation
    and test) between them as matched pairs (:func:`_matched_pairs`), each set keeping its
    count label by label. Only for exactly two held-out sets and units of one sample (no
    groups): otherwise the first deal stands. Returns (set of each unit, whether it re-dealt).
    """
    largest = int(np.argmax(counts))
    held_sets = [i for i in range(len(counts)) if i != largest and counts[i] > 0]
    if len(held_sets) != 2:
        return unit_set, False
    held = np.flatnonzero(np.isin(unit_set, held_sets) & hard)
    if held.size < 2 or not np.all(size[held] == 1):
        return unit_set, False
    current = (unit_set[held] == held_sets[1]).astype(np.int64)
    local = _matched_pairs(difficulty[held], strata[held], current, rng)
    out = unit_set.copy()
    out[held] = np.asarray(held_sets)[local]
    return out, True


def _matched_pairs(difficulty, strata, current, rng) -> np.ndarray:
    """Set (0 or 1) of each of the held-out samples, ``current`` their set now: matched pairs.

    Inside each stratum the samples are ranked by difficulty and the hardest ``2 x min(count
    in set 0, count in set 1)`` are paired (hardest two, next two, ...); the rest (the easiest)
    go to the set that had more, so every stratum keeps its count in both sets. Pairs are then
    oriented in a random order, each putting its harder sample in the set whose running sum of
    error odds (``sigmoid(4 x difficulty)``) is lower (a coin on equal sums): both sets get the
    same hard samples, label by label, and the same expected errors."""
    n = difficulty.size
    tiebreak = rng.permutation(n)
    rank = _rank_within(difficulty, strata, tiebreak)
    order = np.lexsort((tiebreak, rank, strata))
    st = strata[order]
    starts = np.r_[0, np.flatnonzero(np.diff(st)) + 1]
    stops = np.r_[starts[1:], n]
    out = np.asarray(current, np.int64).copy()
    pairs = []
    for a, b in zip(starts, stops, strict=True):
        run = order[a:b]
        in0, in1 = np.count_nonzero(out[run] == 0), np.count_nonzero(out[run] == 1)
        m = 2 * int(min(in0, in1))
        pairs.extend(run[:m].reshape(-1, 2).tolist())
        out[run[m:]] = 0 if in0 > in1 else 1  # the pairs took min(in0, in1) from each set
    for u, v in _orient(pairs, difficulty, rng):
        out[u], out[v] = 0, 1
    return out


def representative_assignment(
    data: Data,
    counts: list[int],
    key,
    options: AutoSplitOptions,
    *,
    metric: str,
    mesh=None,
    progress: bool = False,
) -> tuple[np.ndarray, dict]:
    """``split(method="auto")``: set of each sample [S] and a description of the construction.

    The units (groups, or samples) are clustered into k-means *cells* of about ``cell_size``
    units (one blocked k-means over all of them, k-means++ seeds from ``key``, ``num_iters``
    Lloyd iterations, at most ``max_cells`` cells); the units are ordered by (stratum = label,
    cell, a nearest-neighbour chain inside the cell) and dealt to the sets in proportion to
    their sizes along that order (:func:`deal`). Each set thus receives its share of every
    label and of every cell within it, up to about one unit: a stratified sample at the
    resolution of the cells, whose kernel mean (MMD to the whole) is closer to the data's than a
    stratified random split's. With labels, the *hard* units (:data:`HARD_MARGIN`: a ridge
    one-vs-rest linear fit of the labels is closer to getting them wrong than right) are paired
    along each label's difficulty ranking before the deal (twins: hardest two, next two, ...)
    and a pair is dealt as one item, to train whole or split between two held-out sets of equal
    size (:func:`_deal_twins`), oriented to balance the sets' expected errors, so validation
    accuracy predicts test accuracy; a label's count in a set can then differ from the plain
    deal's by one more unit. Otherwise (held-out sets of different sizes, groups) the hard units
    the deal sent to the held-out sets are re-dealt between them as matched pairs
    (:func:`_pair_held_out`), every set keeping its count label by label.
    ``progress``: a tqdm bar over the stages (units, k-means cells, order, deal).
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=4, desc="split (auto)", unit="stage", disable=not progress)
    try:
        return _representative(data, counts, key, options, metric, mesh, bar)
    finally:
        bar.close()


def _representative(data, counts, key, options, metric, mesh, bar) -> tuple[np.ndarray, dict]:
    bar.set_postfix_str("unit vectors")
    if data.source is not None and data.x_host is None:
        # rows read per process: no process reads every vector at once
        return _per_process(data, counts, key, options, metric, mesh, bar)
    unit, ux, size = _unit_vectors(data)
    num_units = ux.shape[0]
    strata = _unit_strata(data, unit, num_units)
    cell_size, max_cells, num_iters = _cell_options(counts, options)
    if metric == "cosine":
        ux = _unit_rows(ux)
    rng = np.random.default_rng(np.ravel(key_data(key)).tolist())
    tiebreak = rng.permutation(num_units)
    k = _num_cells(num_units, cell_size, max_cells, ux.shape[1])
    bar.update(1)
    bar.set_postfix_str(f"k-means ({k} cells)")
    if k > 1:
        kw = {} if mesh is None else {"mesh": mesh}
        _, cell = gk.kmeans(
            jnp.asarray(ux), k, jax.random.fold_in(key, 0x5E7), num_iters=int(num_iters), **kw
        )
        cell = np.asarray(cell)
    else:
        cell = np.zeros(num_units, np.int64)
    bar.update(1)
    bar.set_postfix_str("order")
    order = np.lexsort((tiebreak, cell, strata))
    order = _chain_runs(order, ux, strata * (int(cell.max()) + 1) + cell)
    # with labels: a difficulty per unit; hard = past halfway from its own label's ridge target
    # (+1) towards another's (-1), the units a classifier may get wrong, which validation and
    # test must share alike
    difficulty = _difficulty(ux, strata, rng)
    return _finish(
        unit, size, counts, order, cell, strata, difficulty, rng, cell_size, num_iters, bar
    )


def _cell_options(counts, options) -> tuple[int, int, int]:
    """(cell_size, max_cells, num_iters), checked."""
    total = int(sum(counts))
    default_cell = max(4, int(np.ceil(total / max(1, min(counts)))))
    cell_size = default_cell if options.cell_size is None else options.cell_size
    max_cells, num_iters = options.max_cells, options.num_iters
    for name, v in (("cell_size", cell_size), ("max_cells", max_cells), ("num_iters", num_iters)):
        if v < 1:
            raise ValueError(f"method_options {name} must be an int >= 1, got {v!r}")
    return cell_size, max_cells, num_iters


# Most centroid values (cells x width): k-means keeps several copies of its [k, d] centroids on
# every device (the seeds, the state in and out, the sums and their psum: about five per device,
# measured), so very wide vectors get fewer cells: 256 cells up to 4,096 dims, 8 at 131,072. At
# 2^21 (16 cells at 131,072) they took a process reading its own rows of a 2,100 x 131,072 store
# on 2 processes to 0.63x the store, against the rows' 0.5x. The nearest-neighbour chains inside
# each cell still order its units finely.
_MAX_CENTROID_VALUES = 1 << 20


def _num_cells(num_units: int, cell_size: int, max_cells: int, dim: int) -> int:
    """k-means cells: about ``num_units / cell_size``, at most ``max_cells`` and
    ``_MAX_CENTROID_VALUES / dim``."""
    cap = min(max_cells, max(1, _MAX_CENTROID_VALUES // max(1, dim)))
    return int(min(cap, max(1, round(num_units / cell_size))))


def _unit_rows(v: np.ndarray) -> np.ndarray:
    """Rows of ``v`` scaled to unit length (zero rows kept): row by row, so the same whether
    taken on all rows or on any piece of them."""
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def _per_process(data, counts, key, options, metric, mesh, bar) -> tuple[np.ndarray, dict]:
    """:func:`_representative` for one vector per unit read per process (``data.source``): the
    same steps on the same rows, none of them reading every vector on a process."""
    from jax.experimental import multihost_utils

    source = data.source
    unit, vec_unit, size, one = _units(data)
    num_units = size.shape[0]
    dim = source.dim
    strata = _unit_strata(data, unit, num_units)
    cell_size, max_cells, num_iters = _cell_options(counts, options)
    cosine = metric == "cosine"
    by_unit = np.argsort(vec_unit, kind="stable")  # each unit's vectors, in vector order
    first = np.searchsorted(vec_unit[by_unit], np.arange(num_units + 1))

    def rows(units) -> np.ndarray:
        """float32 unit vectors of ``units``, as the host path has them (``_unit_vectors``: a
        unit's one vector, or the float64 mean of its vectors summed in vector order)."""
        units = np.asarray(units, np.int64)
        if one:
            v = np.asarray(source.host_rows(units), np.float32)
        else:
            per = first[units + 1] - first[units]
            at = np.repeat(first[units] - np.cumsum(per) + per, per) + np.arange(per.sum())
            sums = np.add.reduceat(
                np.asarray(source.host_rows(by_unit[at]), np.float64), np.cumsum(per) - per
            )
            v = (sums / per[:, None]).astype(np.float32)
        return _unit_rows(v) if cosine else v

    rng = np.random.default_rng(np.ravel(key_data(key)).tolist())
    tiebreak = rng.permutation(num_units)
    k = _num_cells(num_units, cell_size, max_cells, dim)
    bar.update(1)
    bar.set_postfix_str(f"k-means ({k} cells)")
    if k > 1:
        km_key = jax.random.fold_in(key, 0x5E7)
        # Compiled before the rows are read: the compile's transient memory (~60 MB a program
        # at d = 131,072 on XLA:CPU) is handed back before the rows arrive, never on top of them.
        gk.kmeans_compile(_units_like(num_units, dim, mesh), k, km_key, mesh=mesh, n=num_units)
        trim_heap()
        xs, n = _sharded_units(data, rows, num_units, dim, cosine or not one, mesh)
        _, cell = gk.kmeans(xs, k, km_key, num_iters=int(num_iters), mesh=mesh, n=n)
        cell = np.asarray(multihost_utils.process_allgather(cell, tiled=True))[:num_units]
        xs.delete()  # this process's rows: freed before the chains and the difficulty read more
        del xs
        release_freed_memory()
    else:
        cell = np.zeros(num_units, np.int64)
    bar.update(1)
    bar.set_postfix_str("order")
    order = np.lexsort((tiebreak, cell, strata))
    run_id = strata * (int(cell.max()) + 1) + cell
    pieces = _chain_pieces(order, run_id)

    def chained(j):
        a, b = pieces[j]
        idx = order[a:b]
        return idx[_chain(rows(idx))].astype(np.int32)

    links = spread_processes(len(pieces), chained, np.int32)
    order = order.copy()
    for (a, b), idx in zip(pieces, links, strict=True):
        order[a:b] = idx
    difficulty = _difficulty_of(
        lambda a, b: rows(np.arange(a, b)), num_units, dim, strata, rng, spread_processes
    )
    release_freed_memory()
    return _finish(
        unit, size, counts, order, cell, strata, difficulty, rng, cell_size, num_iters, bar
    )


def _units_like(num_units: int, dim: int, mesh) -> jax.ShapeDtypeStruct:
    """Shape, dtype and sharding of ``_sharded_units``' rows."""
    axis, _ = gk.sharding.mesh_axis(mesh)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis, None))
    shape = (gk.sharding.padded_rows(num_units, mesh), dim)
    return jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)


def _sharded_units(data, rows, num_units, dim, on_host, mesh) -> tuple[jax.Array, int]:
    """``(x, n)``: the float32 unit vectors row-sharded and padded over ``mesh``
    (``kernels.shard_rows``' layout), each process reading only its own devices' rows;
    ``on_host``: made by ``rows`` on the host (cosine's scaled rows, groups' means)."""
    if not on_host:
        xs, n = data.task_rows(np.arange(num_units))
        if xs.dtype != jnp.float32:  # as the host path gives them: widened (exact) or rounded
            xs = jax.jit(lambda a: a.astype(jnp.float32), out_shardings=xs.sharding)(xs)
        return xs, n
    # cosine: each row scaled on the host, as the host path does (XLA's row sums would round
    # differently from NumPy's); groups: each unit's mean, as the host path takes it
    like = _units_like(num_units, dim, mesh)
    padded = like.shape[0]
    piece = _piece_rows(num_units, dim)

    def local(index):
        start, stop, _ = index[0].indices(padded)
        out = np.zeros((stop - start, dim), np.float32)
        for a in range(start, min(stop, num_units), piece):
            b = min(a + piece, stop, num_units)
            out[a - start : b - start] = rows(np.arange(a, b))
        return out

    xs = jax.make_array_from_callback(like.shape, like.sharding, local, dtype=jnp.float32)
    return xs, num_units


def spread_processes(count: int, make, dtype, tail=()) -> list:
    """``[make(j) for j < count]`` (arrays of ``dtype``, shape ``[m_j, *tail]``), each made on
    one process (``j % processes``) and gathered on every process, in order."""
    from jax.experimental import multihost_utils

    procs, me = jax.process_count(), jax.process_index()
    if procs == 1 or count == 0:
        return _spread_here(count, make, dtype, tail)
    per = -(-count // procs)
    mine = [np.asarray(make(j), dtype).reshape(-1) for j in range(me, count, procs)]
    sizes = np.zeros(per, np.int32)
    sizes[: len(mine)] = [m.size for m in mine]
    sizes = np.asarray(multihost_utils.process_allgather(sizes)).reshape(procs, per)
    sizes = sizes.astype(np.int64)  # a process's total may pass 2**31 values
    flat = np.zeros(int(sizes.sum(axis=1).max()), dtype)
    if mine:
        flat[: int(sizes[me].sum())] = np.concatenate(mine)
    del mine
    every = np.asarray(multihost_utils.process_allgather(flat)).reshape(procs, -1)
    out: list = [None] * count
    for p in range(procs):
        ends = np.cumsum(sizes[p])
        for i, j in enumerate(range(p, count, procs)):
            out[j] = every[p, ends[i] - sizes[p, i] : ends[i]].reshape(-1, *tail)
    return out


def _finish(unit, size, counts, order, cell, strata, difficulty, rng, cell_size, num_iters, bar):
    """The deal along ``order`` (hard units paired) and the construction's description."""
    hard = difficulty > HARD_MARGIN
    graded = bool(hard.any())
    bar.update(1)
    bar.set_postfix_str("deal")
    twins = _deal_twins(order, size, counts, difficulty, hard, strata, rng) if graded else None
    paired = twin_deal = twins is not None
    if paired:
        unit_set = twins
    else:
        unit_set = deal(order, size, counts)
        if graded:  # groups, other set layouts: pair what the deal sent to the held-out sets
            unit_set, paired = _pair_held_out(unit_set, size, counts, strata, difficulty, hard, rng)
    bar.update(1)
    construction = {
        "name": "kmeans-cells-deal",
        "cells": int(np.unique(cell).size),
        "cell_size": int(cell_size),
        "strata": int(np.unique(strata).size),
        "num_iters": int(num_iters),
        "hard_units": int(np.count_nonzero(hard)),
        "held_out_pairs": paired,
        "twins_dealt": twin_deal,  # pairs formed before the deal (False: after it, or none)
    }
    return unit_set[unit].astype(np.int32), construction
