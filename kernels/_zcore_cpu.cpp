// ZCore subspace samples (num_dims == 2) on the CPU, exact, one sample at a time.
//
// The XLA kernel in zcore.py searches fixed windows of the per-dimension sorted order, in batches
// (static shapes). This one searches a grid of the subspace, outward from the query, and stops as
// soon as the answer is proven:
// * the grid of subspace (a, b): the points cut into strips of consecutive ranks in b, each strip
//   sorted by a. It is built once for consecutive samples of the same subspace (the caller groups
//   them), from the per-dimension sorted orders and ranks;
// * a query walks each strip outward in a from its own coordinate, always in the strip whose
//   unvisited points could be nearest: an unvisited point of strip s differs from the query by at
//   least the gap to the strip's next unvisited a-value and by at least the distance from the
//   query to the strip's range of b-values, so its distance is at least combine(gap, b-distance)
//   (the same float operations as a distance, which are monotone);
// * the nearest point (lowest index on ties) is proven once it lies strictly below the smallest
//   of these bounds; the r nearest neighbours once r visited points do.
// Nothing is estimated: the results are the brute-force ones, ties included.
//
// Pure computation: no allocation, no I/O, no global state. Python calls these through ctypes
// (which releases the GIL), several parts of a batch in parallel on threads that each own their
// scratch buffers (_zcore_native.py).

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(_WIN32)
#define GJZ_EXPORT extern "C" __declspec(dllexport)
#else
#define GJZ_EXPORT extern "C" __attribute__((visibility("default")))
#endif

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kEps = 1e-8f;  // zcore._EPS

enum Mode : int { kL1 = 0, kL2Squared = 1, kL2 = 2 };

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// (distance, index) as one integer whose order is the lexicographic one: distances are >= +0,
// so their IEEE bits sort as unsigned integers.
inline uint64_t make_key(float d, int32_t i) {
  return (uint64_t(float_bits(d)) << 32) | uint32_t(i);
}
inline float key_dist(uint64_t k) { return bits_float(uint32_t(k >> 32)); }
inline int32_t key_index(uint64_t k) { return int32_t(uint32_t(k)); }

// zcore._pair_distance / _combine: first dimension's term first.
inline float combine(float a, float b, int mode) {
  if (mode == kL1) return std::fabs(a) + std::fabs(b);
  float s = a * a + b * b;
  return mode == kL2 ? std::sqrt(s) : s;
}

constexpr int kMaxStrips = 64;
constexpr int64_t kRun = 64;

// The grid of the current subspace (a, b) = (dim[0], dim[1]), dim[0] < dim[1].
struct Grid {
  const float* xt;
  const int32_t* order_all;
  const float* sorted_all;
  const uint8_t* strip_all;  // [d * n]: each point's strip in each dimension (rank >> shift)
  int64_t n;
  int shift;       // strip s holds b-ranks [s << shift, (s + 1) << shift)
  int strips;
  float* ab;       // caller's buffers: per strip, (a, b) of its points by ascending a (2n),
  int32_t* id;     // and their indices (n)
  int32_t dim[2] = {-1, -1};
  int64_t start[kMaxStrips + 1];
  float b_lo[kMaxStrips], b_hi[kMaxStrips];

  Grid(const float* xt_, const int32_t* order_, const float* sorted_, const uint8_t* strip_,
       int64_t n_, int shift_, float* ab_, int32_t* id_)
      : xt(xt_), order_all(order_), sorted_all(sorted_), strip_all(strip_), n(n_),
        shift(shift_), strips(int(((n_ - 1) >> shift_) + 1)), ab(ab_), id(id_) {}

  const float* column(int k) const { return xt + int64_t(dim[k]) * n; }
  const float* sorted(int k) const { return sorted_all + int64_t(dim[k]) * n; }

  // Makes subspace (lo, hi) current, lo < hi: one pass over the points in a-order, each dealt to
  // the strip of its b-rank.
  void use(int32_t lo, int32_t hi) {
    if (lo == dim[0] && hi == dim[1]) return;
    dim[0] = lo;
    dim[1] = hi;
    const int32_t* order_a = order_all + int64_t(lo) * n;
    const float* sorted_a = sorted(0);
    const float* sorted_b = sorted(1);
    const float* column_b = column(1);
    const uint8_t* strip_b = strip_all + int64_t(hi) * n;
    int64_t cursor[kMaxStrips];
    for (int s = 0; s <= strips; ++s) start[s] = std::min(n, int64_t(s) << shift);
    for (int s = 0; s < strips; ++s) {
      cursor[s] = start[s];
      b_lo[s] = sorted_b[start[s]];
      b_hi[s] = sorted_b[start[s + 1] - 1];
    }
    for (int64_t j = 0; j < n; ++j) {
      const int32_t i = order_a[j];
      const int64_t pos = cursor[strip_b[i]]++;
      ab[2 * pos] = sorted_a[j];
      ab[2 * pos + 1] = column_b[i];
      id[pos] = i;
    }
  }
};

// A query's walk over the grid: per strip, the next unvisited position on each side and the
// bound on the distance of the strip's unvisited points.
struct Walk {
  const Grid& g;
  float q[2];
  int mode;
  int64_t left[kMaxStrips], right[kMaxStrips];
  float gap_left[kMaxStrips], gap_right[kMaxStrips], across[kMaxStrips], bound[kMaxStrips];
  bool ready[kMaxStrips];
  int first = 0, last = -1;  // ready strips: [first, last], around the query's b (by distance)

  Walk(const Grid& g_, float q0, float q1, int mode_) : g(g_), mode(mode_) {
    q[0] = q0;
    q[1] = q1;
    for (int s = 0; s < g.strips; ++s) {
      // Every b-value of the strip lies in [b_lo, b_hi]: |b - q1| is at least this.
      across[s] = q1 < g.b_lo[s] ? g.b_lo[s] - q1 : (q1 > g.b_hi[s] ? q1 - g.b_hi[s] : 0.0f);
      ready[s] = false;
      const bool empty = g.start[s] == g.start[s + 1];
      bound[s] = empty ? kInf : combine(0.0f, across[s], mode);
    }
  }

  bool done(int s) const { return ready[s] && left[s] < g.start[s] && right[s] >= g.start[s + 1]; }

  void update(int s) {
    gap_left[s] = left[s] >= g.start[s] ? q[0] - g.ab[2 * left[s]] : kInf;
    gap_right[s] = right[s] < g.start[s + 1] ? g.ab[2 * right[s]] - q[0] : kInf;
    bound[s] = done(s) ? kInf : combine(std::min(gap_left[s], gap_right[s]), across[s], mode);
  }

  // The strip to walk next (smallest bound; one with points left even if its bound overflowed),
  // and the smallest bound of all: every unvisited point is at least that far. -1: none left.
  // Strips are made ready in order of their distance in b, which grows away from the query's
  // strip on both sides: beyond the ready range, only the next strip on each side can hold the
  // smallest bound.
  int next(float* smallest) const {
    int best = -1;
    float b = kInf;
    const int lo = last < first ? 0 : std::max(0, first - 1);
    const int hi = last < first ? g.strips - 1 : std::min(g.strips - 1, last + 1);
    for (int s = lo; s <= hi; ++s) {
      const bool live = ready[s] ? !done(s) : g.start[s] < g.start[s + 1];
      if (live && (best < 0 || bound[s] < b)) {
        best = s;
        b = bound[s];
      }
    }
    *smallest = b;
    return best;
  }

  // Visits up to kRun positions of strip s, [*lo, *hi), from the side with the smaller gap (the
  // first call only places the strip's pointers: *lo == *hi).
  void step(int s, int64_t* lo, int64_t* hi) {
    const int64_t a = g.start[s], e = g.start[s + 1];
    if (!ready[s]) {
      ready[s] = true;
      first = last < first ? s : std::min(first, s);
      last = std::max(last, s);
      int64_t below = a, above = e;  // the first position whose a is >= q[0]
      while (below < above) {
        const int64_t mid = below + (above - below) / 2;
        if (g.ab[2 * mid] < q[0]) {
          below = mid + 1;
        } else {
          above = mid;
        }
      }
      right[s] = below;
      left[s] = right[s] - 1;
      *lo = *hi = 0;
      update(s);
      return;
    }
    if (right[s] < e && (left[s] < a || gap_right[s] <= gap_left[s])) {
      *lo = right[s];
      *hi = right[s] = std::min(e, right[s] + kRun);
    } else {
      *hi = left[s] + 1;
      *lo = std::max(a, left[s] + 1 - kRun);
      left[s] = *lo - 1;
    }
    update(s);
  }

  // Distances of grid positions [lo, hi) (first dimension's term first): contiguous loads, no
  // branches, so the compiler vectorises it.
  void distances(int64_t lo, int64_t hi, float* __restrict out) const {
    const float* __restrict ab = g.ab + 2 * lo;
    const float q0 = q[0], q1 = q[1];
    const int64_t count = hi - lo;
    if (mode == kL1) {
      for (int64_t j = 0; j < count; ++j)
        out[j] = std::fabs(ab[2 * j] - q0) + std::fabs(ab[2 * j + 1] - q1);
      return;
    }
    for (int64_t j = 0; j < count; ++j) {
      const float x = ab[2 * j] - q0, y = ab[2 * j + 1] - q1;
      out[j] = x * x + y * y;
    }
    if (mode == kL2)
      for (int64_t j = 0; j < count; ++j) out[j] = std::sqrt(out[j]);
  }
};

// How far (in value) a window of `ranks` ranks centred on q reaches in a sorted dimension; a
// side that runs out of points reaches everything (inf).
float reach(const float* sorted, int64_t n, float q, int64_t ranks) {
  const int64_t pos = std::lower_bound(sorted, sorted + n, q) - sorted;
  const int64_t lo = pos - ranks / 2 - 1, hi = pos + ranks / 2;
  const float left = lo >= 0 ? q - sorted[lo] : kInf;
  const float right = hi < n ? sorted[hi] - q : kInf;
  return std::min(left, right);
}

// Nearest point to (q0, q1), lowest index on ties.
int32_t nearest_point(const Grid& g, float q0, float q1, int mode) {
  Walk walk(g, q0, q1, mode);
  uint64_t best = std::numeric_limits<uint64_t>::max();
  float dist[kRun];
  for (;;) {
    float smallest;
    const int s = walk.next(&smallest);
    if (s < 0 || key_dist(best) < smallest) break;
    int64_t lo, hi;
    walk.step(s, &lo, &hi);
    walk.distances(lo, hi, dist);
    for (int64_t j = 0; j < hi - lo; ++j) best = std::min(best, make_key(dist[j], g.id[lo + j]));
  }
  return key_index(best);
}

// The r nearest neighbours of point p (itself excluded, lowest index on ties): their keys in
// keys[0 .. r), in any order. keys has room for 2n entries, hist for kBuckets + 1 counters.
// Requires 1 <= r <= n - 1.
//
// Distances are counted in buckets of width h (from how far 8r ranks reach around p in a;
// kBuckets of them, then one overflow bucket). The bucket of a distance is monotone in it, so a
// point in a lower bucket is strictly nearer than one in a higher bucket:
// * the walk is proven once the buckets wholly below the bound's bucket hold r points (they are
//   all strictly below the bound, and every unvisited point is at least the bound away);
// * a visited point beyond `limit`, the first bucket where the count reaches r, can never be among
//   the r nearest, and is not kept;
// * at the end, the buckets before the r-th point's bucket are taken whole, and only that bucket's
//   points are ordered.
constexpr int32_t kBuckets = 2048;

void neighbours(const Grid& g, int32_t p, int64_t r, int mode, uint64_t* keys, int32_t* hist) {
  const float q0 = g.column(0)[p], q1 = g.column(1)[p];
  const float* sorted_a = g.sorted(0);
  float scale = 2.0f * reach(sorted_a, g.n, q0, 8 * r + 64);
  if (!(scale > 0.0f && scale < kInf)) scale = sorted_a[g.n - 1] - sorted_a[0];
  float inv = scale > 0.0f && scale < kInf ? float(kBuckets) / scale : 0.0f;
  auto bucket = [&inv](float d) {
    const float v = d * inv;  // monotone in d; NaN (inf * 0) and beyond the range: overflow
    return v < float(kBuckets) ? int32_t(v) : kBuckets;
  };
  std::memset(hist, 0, sizeof(int32_t) * (kBuckets + 1));
  Walk walk(g, q0, q1, mode);
  int64_t m = 0, below = 0;
  int32_t ptr = 0;           // buckets < ptr are wholly below the bound; `below` counts them
  int32_t limit = kBuckets;  // points in later buckets are never among the r nearest
  int64_t upto = 0;          // kept points in buckets <= limit, once m reached r
  auto lower_limit = [&]() {  // back to the first bucket where the count reaches r
    while (upto - hist[limit] >= r) upto -= hist[limit--];
  };
  auto first_limit = [&]() {  // `below` counts the buckets before ptr
    limit = std::min(ptr, kBuckets);
    upto = below + hist[limit];
    while (upto < r) upto += hist[++limit];
    lower_limit();  // below may already have reached r
  };
  float dist[kRun];
  int32_t runb[kRun];
  for (;;) {
    float smallest;
    const int s = walk.next(&smallest);
    if (s < 0) break;  // every point visited: all kept ones are candidates
    const int32_t top = bucket(smallest);
    while (ptr < top) below += hist[ptr++];
    if (below >= r) break;
    if (top == kBuckets && inv > 0.0f) {
      // The bound left the buckets' range before r points fell below it: widen the buckets
      // 8-fold and count the kept points again (the same invariants, from scratch).
      inv *= 0.125f;
      std::memset(hist, 0, sizeof(int32_t) * (kBuckets + 1));
      for (int64_t j = 0; j < m; ++j) hist[bucket(key_dist(keys[j]))] += 1;
      ptr = 0;
      below = 0;
      limit = kBuckets;
      if (m >= r) first_limit();
      continue;
    }
    int64_t lo, hi;
    walk.step(s, &lo, &hi);
    const int64_t count = hi - lo;
    if (count == 0) continue;
    walk.distances(lo, hi, dist);
    int any = 0;
    for (int64_t j = 0; j < count; ++j) {
      runb[j] = bucket(dist[j]);
      any |= runb[j] <= limit;
    }
    if (!any) continue;
    for (int64_t j = 0; j < count; ++j) {
      const int32_t b = runb[j], i = g.id[lo + j];
      if (b > limit || i == p) continue;
      keys[m++] = make_key(dist[j], i);
      hist[b] += 1;
      below += b < ptr;
      if (m < r) continue;
      if (m == r) {
        first_limit();
      } else {
        ++upto;
        lower_limit();
      }
    }
  }
  // Buckets before `limit` hold fewer than r points (it is the first bucket where the count
  // reaches r); the rest come from bucket `limit`.
  uint64_t* ties = keys + g.n;
  int64_t taken = 0, tied = 0;
  for (int64_t j = 0; j < m; ++j) {
    const uint64_t key = keys[j];
    const int32_t b = bucket(key_dist(key));
    keys[taken] = key;
    taken += b < limit;
    ties[tied] = key;
    tied += b == limit;
  }
  if (tied > r - taken) std::nth_element(ties, ties + (r - taken - 1), ties + tied);
  std::copy(ties, ties + (r - taken), keys + taken);
}

// Sample s in the grid's order: makes (min, max) of its dimensions current and returns its
// anchor in that order.
void enter(Grid& g, const int32_t* dims, const float* anchors, int64_t s, float* q) {
  const int32_t d0 = dims[2 * s], d1 = dims[2 * s + 1];
  const bool swap = d1 < d0;
  g.use(swap ? d1 : d0, swap ? d0 : d1);
  q[0] = anchors[2 * s + (swap ? 1 : 0)];
  q[1] = anchors[2 * s + (swap ? 0 : 1)];
}

// zcore._penalty: neighbour j's share is ((d_min + eps) / (d_j + eps)) ** exponent, normalised
// to sum 1; taken off acc in fixed point (2^-32). weights: scratch for r floats.
void penalty(const uint64_t* keys, int64_t r, float exponent, float* weights, int64_t* acc) {
  float d_min = kInf;
  for (int64_t j = 0; j < r; ++j) {
    weights[j] = key_dist(keys[j]);
    d_min = std::min(d_min, weights[j]);
  }
  const float top = d_min + kEps;
  for (int64_t j = 0; j < r; ++j) weights[j] = top / (weights[j] + kEps);
  const int e = int(exponent);
  if (float(e) == exponent && e >= 1 && e <= 16) {
    // power(): the same multiplications, one vectorised pass per bit of the exponent.
    float base[64], out[64];
    for (int64_t lo = 0; lo < r; lo += 64) {
      const int64_t count = std::min<int64_t>(64, r - lo);
      float* w = weights + lo;
      for (int64_t j = 0; j < count; ++j) {
        base[j] = w[j];
        out[j] = 1.0f;
      }
      for (int bits = e; bits; bits >>= 1) {
        if (bits & 1)
          for (int64_t j = 0; j < count; ++j) out[j] *= base[j];
        if (bits >> 1)
          for (int64_t j = 0; j < count; ++j) base[j] *= base[j];
      }
      std::copy(out, out + count, w);
    }
  } else {
    for (int64_t j = 0; j < r; ++j) weights[j] = std::pow(weights[j], exponent);
  }
  double part[4] = {0.0, 0.0, 0.0, 0.0};  // four chains instead of one long dependency
  int64_t j = 0;
  for (; j + 4 <= r; j += 4)
    for (int u = 0; u < 4; ++u) part[u] += weights[j + u];
  for (; j < r; ++j) part[0] += weights[j];
  const double total = (part[0] + part[1]) + (part[2] + part[3]);
  const double scale = 4294967296.0 / total;  // 2^32
  for (j = 0; j < r; ++j) acc[key_index(keys[j])] -= int64_t(double(weights[j]) * scale + 0.5);
}

bool bad_arguments(int64_t n, int64_t r, int metric, int shift) {
  return n < 1 || n >= (int64_t(1) << 31) || r < 0 || r > n - 1 || (metric != 0 && metric != 1) ||
         shift < 0 || shift > 31 || ((n - 1) >> shift) + 1 > kMaxStrips;
}

}  // namespace

// Adds the score changes of samples[0 .. count) (indices into dims / anchors; grouped by
// subspace, or the grid is rebuilt for each) to acc, in fixed point (units of 2^-32, int64):
// integer sums are exact, so the result does not depend on the order of the samples or on how
// they are split between calls and threads. A sample adds 2^32 to its nearest point and takes
// round(2^32 * share) off each neighbour. Tables [d * n]: xt (column per dimension), order and
// sorted (per dimension, stable), strip (each point's rank >> shift, at most kMaxStrips strips).
// Scratch: keys for 2n entries, weights for r, ab for 2n, id for n. Returns 0, or -1 on bad
// arguments.
GJZ_EXPORT int64_t gjz_zcore_samples(const float* xt, const int32_t* order, const float* sorted,
                                     const uint8_t* strip, int64_t n, const int32_t* dims,
                                     const float* anchors, const int64_t* samples, int64_t count,
                                     int metric, float exponent, int64_t r, int shift,
                                     uint64_t* keys, float* weights, float* ab, int32_t* id,
                                     int64_t* acc) {
  if (bad_arguments(n, r, metric, shift)) return -1;
  const int anchor_mode = metric == 0 ? kL1 : kL2Squared;
  const int neighbour_mode = metric == 0 ? kL1 : kL2;
  Grid grid(xt, order, sorted, strip, n, shift, ab, id);
  int32_t hist[kBuckets + 1];
  for (int64_t t = 0; t < count; ++t) {
    float q[2];
    enter(grid, dims, anchors, samples[t], q);
    const int32_t p = nearest_point(grid, q[0], q[1], anchor_mode);
    acc[p] += int64_t(1) << 32;
    if (r == 0) continue;
    neighbours(grid, p, r, neighbour_mode, keys, hist);
    penalty(keys, r, exponent, weights, acc);
  }
  return 0;
}

// For tests: each sample's nearest point and its r nearest neighbours (ascending by distance,
// then index): nearest_out [count], neighbours_out [count * r]. Arguments as above.
GJZ_EXPORT int64_t gjz_zcore_search(const float* xt, const int32_t* order, const float* sorted,
                                    const uint8_t* strip, int64_t n, const int32_t* dims,
                                    const float* anchors, int64_t count, int metric, int64_t r,
                                    int shift, uint64_t* keys, float* ab, int32_t* id,
                                    int32_t* nearest_out, int32_t* neighbours_out) {
  if (bad_arguments(n, r, metric, shift)) return -1;
  Grid grid(xt, order, sorted, strip, n, shift, ab, id);
  int32_t hist[kBuckets + 1];
  for (int64_t t = 0; t < count; ++t) {
    float q[2];
    enter(grid, dims, anchors, t, q);
    const int32_t p = nearest_point(grid, q[0], q[1], metric == 0 ? kL1 : kL2Squared);
    nearest_out[t] = p;
    if (r == 0) continue;
    neighbours(grid, p, r, metric == 0 ? kL1 : kL2, keys, hist);
    std::sort(keys, keys + r);
    for (int64_t j = 0; j < r; ++j) neighbours_out[t * r + j] = key_index(keys[j]);
  }
  return count;
}

// The calling convention above; _zcore_native.py refuses a library that reports another (a stale
// build left beside newer Python code).
GJZ_EXPORT int64_t gjz_abi_version() { return 3; }

// An importable module (setuptools builds extension modules); the functions above are reached
// through ctypes.
static PyModuleDef gjz_module = {PyModuleDef_HEAD_INIT, "_zcore_cpu",
                                 "ZCore subspace samples on the CPU (ctypes entry points).", -1,
                                 nullptr};

PyMODINIT_FUNC PyInit__zcore_cpu(void) { return PyModule_Create(&gjz_module); }
