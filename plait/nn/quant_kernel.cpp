// Weight-only int8 / int4 products y = x W^T + b for a few rows of x, read straight from the
// packed weights (formats: plait/nn/quant.py; design and numbers: docs/efficiency.md §2).
// Built at first use by plait/nn/quant_kernel.py with the system compiler: with -mavx2 -mfma
// -mf16c where the CPU has them (V8 below is then a __m256), else as portable C++.
//
// Each thread takes a contiguous range of output rows (at::parallel_for, torch's thread count;
// built with -fopenmp, without which ATen's header runs the whole range on one thread)
// and streams them one row at a time: one sequential stream per thread, which the hardware
// prefetcher follows (several rows side by side read memory slower, measured). A weight is
// dequantised in registers once and used for up to 4 rows of x; nothing fp32 the size of W is
// ever written. Independent accumulators (along k, per row of x, per half block) hide the FMA
// latency; they are 8-lane vectors, reduced across lanes once per output.
//
// int8 (per output row n, scale s_n):   y[m, n] = s_n sum_k x[m, k] q[n, k] + b_n
// int4 (group g of G inputs: scale d_g, minimum c_g, w = d_g q + c_g), by half blocks h of 32:
//   y[m, n] = sum_h d_g(h) (sum_{k in h} x[m, k] q[n, k]) + sum_g c_g (sum_{k in g} x[m, k]) + b_n
// The inner int4 sums need no shift: nibble j of a 32-bit word, masked in place, is q 16^j,
// and x was scaled by 16^-j beforehand (exact: powers of two; prepare_int4). So 8 weights cost
// an AND, a convert and an FMA, as int8's cost a widening load, a convert and an FMA.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define PLAIT_AVX2 1
#endif

#define PLAIT_UNROLL _Pragma("GCC unroll 8")

namespace {

constexpr int kMaxRows = 4;            // rows of x per pass: their accumulators fit registers
constexpr int64_t kL2Bytes = 1 << 18;  // weight bytes of a row block that meets every pass
constexpr int64_t kMinWork = 1 << 15;  // weights per thread below which one thread does all
constexpr int64_t kPrefetch = 512;     // bytes ahead in the weight stream (measured)

// -- eight floats / eight 32-bit words -----------------------------------------------------
#ifdef PLAIT_AVX2
using V8 = __m256;
using W8 = __m256i;
inline V8 vzero() { return _mm256_setzero_ps(); }
inline V8 vset(float v) { return _mm256_set1_ps(v); }
inline V8 vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, V8 v) { _mm256_storeu_ps(p, v); }
inline V8 vmul(V8 a, V8 b) { return _mm256_mul_ps(a, b); }
inline V8 vadd(V8 a, V8 b) { return _mm256_add_ps(a, b); }
inline V8 vfma(V8 a, V8 b, V8 c) { return _mm256_fmadd_ps(a, b, c); }
inline V8 from_i8(const int8_t* p) {  // 8 int8 -> 8 floats
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p)));
}
inline W8 wload(const uint8_t* p) { return _mm256_loadu_si256((const __m256i*)p); }
template <int J>
inline V8 nibble(W8 w) {  // nibble J of each word, as q 16^J (J = 7: as q)
  if constexpr (J == 7) return _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 28));
  else return _mm256_cvtepi32_ps(_mm256_and_si256(w, _mm256_set1_epi32(0xF << (4 * J))));
}
template <int J>
inline V8 nibble_q(W8 w) {  // nibble J of each word, as q
  const __m256i q = _mm256_and_si256(_mm256_srli_epi32(w, 4 * J), _mm256_set1_epi32(15));
  return _mm256_cvtepi32_ps(q);
}
inline V8 halves8(const uint16_t* h) {  // 8 fp16 -> 8 floats
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)h));
}
inline float hsum(V8 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
inline float half(uint16_t h) { return _cvtsh_ss(h); }
inline void prefetch(const void* p) { _mm_prefetch((const char*)p, _MM_HINT_T0); }
#else
struct V8 { float v[8]; };
struct W8 { uint32_t v[8]; };
#define PLAIT_LANES(expr) for (int l = 0; l < 8; ++l) expr
inline V8 vzero() { return V8{}; }
inline V8 vset(float x) { V8 r; PLAIT_LANES(r.v[l] = x); return r; }
inline V8 vload(const float* p) { V8 r; std::memcpy(r.v, p, sizeof r.v); return r; }
inline void vstore(float* p, V8 v) { std::memcpy(p, v.v, sizeof v.v); }
inline V8 vmul(V8 a, V8 b) { PLAIT_LANES(a.v[l] *= b.v[l]); return a; }
inline V8 vadd(V8 a, V8 b) { PLAIT_LANES(a.v[l] += b.v[l]); return a; }
inline V8 vfma(V8 a, V8 b, V8 c) { PLAIT_LANES(c.v[l] += a.v[l] * b.v[l]); return c; }
inline V8 from_i8(const int8_t* p) { V8 r; PLAIT_LANES(r.v[l] = p[l]); return r; }
inline W8 wload(const uint8_t* p) { W8 r; std::memcpy(r.v, p, sizeof r.v); return r; }
template <int J>
inline V8 nibble(W8 w) {
  V8 r;
  PLAIT_LANES(r.v[l] = J == 7 ? float(w.v[l] >> 28) : float(int32_t(w.v[l] & (0xFu << 4 * J))));
  return r;
}
template <int J>
inline V8 nibble_q(W8 w) { V8 r; PLAIT_LANES(r.v[l] = float((w.v[l] >> 4 * J) & 15)); return r; }
inline float half(uint16_t h) { return float(c10::Half(h, c10::Half::from_bits())); }
inline V8 halves8(const uint16_t* h) { V8 r; PLAIT_LANES(r.v[l] = half(h[l])); return r; }
inline float hsum(V8 v) { float s = 0; PLAIT_LANES(s += v.v[l]); return s; }
inline void prefetch(const void* p) { __builtin_prefetch(p); }
#endif

// -- one product: pointers and sizes shared by every thread --------------------------------
struct Problem {
  const float* x;          // (M, ldx): int8: x itself; int4: x scaled per nibble
  int64_t M, K, ldx;       // K: inputs (int8) or padded inputs, a multiple of 64 (int4)
  const uint8_t* w; int64_t ldw;  // weight rows, ldw bytes apart
  const float* scale8;     // int8: (N,) fp32
  const uint16_t* scale4;  // int4: (N, groups) fp16 bits
  const uint16_t* mins;    // int4: (N, groups) fp16 bits
  const float* xsum;       // int4: (M, ldxs): sums of x over each group, zero padded
  int64_t ldxs, groups;
  int group_shift;         // int4: log2(group size)
  const float* bias;       // (N,) or null
  float* y; int64_t N;     // (M, N)
};

inline void store(const Problem& p, int64_t m, int64_t n, float v) {  // y[m, n] = v + b[n]
  p.y[m * p.N + n] = p.bias ? v + p.bias[n] : v;
}

struct Int8Kernel {
  template <int M>  // weight row n against rows m0 .. m0 + M - 1 of x
  static void run(const Problem& p, int64_t n, int64_t m0) {
    constexpr int U = M == 1 ? 4 : 2;  // accumulators along k per row of x: 4 to 8 chains
    const float* x = p.x + m0 * p.ldx;
    const int8_t* w = (const int8_t*)(p.w + n * p.ldw);
    V8 acc[U][M];
    PLAIT_UNROLL
    for (int u = 0; u < U; ++u)
      PLAIT_UNROLL
      for (int m = 0; m < M; ++m) acc[u][m] = vzero();
    int64_t k = 0;
    for (; k + 8 * U <= p.K; k += 8 * U) {
      if ((k & 63) == 0) prefetch(w + k + kPrefetch);
      PLAIT_UNROLL
      for (int u = 0; u < U; ++u) {
        const V8 wv = from_i8(w + k + 8 * u);
        PLAIT_UNROLL
        for (int m = 0; m < M; ++m)
          acc[u][m] = vfma(vload(x + m * p.ldx + k + 8 * u), wv, acc[u][m]);
      }
    }
    for (; k + 8 <= p.K; k += 8) {
      const V8 wv = from_i8(w + k);
      PLAIT_UNROLL
      for (int m = 0; m < M; ++m) acc[0][m] = vfma(vload(x + m * p.ldx + k), wv, acc[0][m]);
    }
    PLAIT_UNROLL
    for (int m = 0; m < M; ++m) {
      V8 a = acc[0][m];
      PLAIT_UNROLL
      for (int u = 1; u < U; ++u) a = vadd(a, acc[u][m]);
      float s = hsum(a);
      for (int64_t t = k; t < p.K; ++t) s += x[m * p.ldx + t] * float(w[t]);
      store(p, m0 + m, n, s * p.scale8[n]);
    }
  }
};

struct Int4Kernel {
  static constexpr int64_t kChunk = 256;  // groups whose scales are made fp32 at a time

  // sum_g c_g xsum_g of weight row n and x row m, as 8 lanes
  static V8 min_term(const Problem& p, int64_t n, int64_t m) {
    const uint16_t* c = p.mins + n * p.groups;
    const float* xs = p.xsum + m * p.ldxs;  // zero padded to a multiple of 8
    V8 acc = vzero();
    int64_t g = 0;
    for (; g + 8 <= p.groups; g += 8) acc = vfma(halves8(c + g), vload(xs + g), acc);
    if (g < p.groups) {  // the last few, without reading past the row
      uint16_t tail[8] = {};
      std::memcpy(tail, c + g, (p.groups - g) * sizeof(uint16_t));
      acc = vfma(halves8(tail), vload(xs + g), acc);
    }
    return acc;
  }

  // half block H (inputs 32 H .. 32 H + 31) of one 64-input block against M rows of x
  template <int M, int H>
  static inline void half_block(const Problem& p, const float* x, W8 wv, V8 d, V8* acc) {
    const V8 q0 = nibble<4 * H>(wv), q1 = nibble<4 * H + 1>(wv);
    const V8 q2 = nibble<4 * H + 2>(wv), q3 = nibble<4 * H + 3>(wv);
    PLAIT_UNROLL
    for (int m = 0; m < M; ++m) {
      const float* xm = x + m * p.ldx + 32 * H;
      const V8 t = vfma(vload(xm + 24), q3, vfma(vload(xm + 16), q2,  // a fresh short chain
                        vfma(vload(xm + 8), q1, vmul(vload(xm), q0))));
      acc[m] = vfma(t, d, acc[m]);
    }
  }

  template <int M>
  static void run(const Problem& p, int64_t n, int64_t m0) {
    const float* x = p.x + m0 * p.ldx;
    const uint8_t* w = p.w + n * p.ldw;
    V8 acc[2][M];  // one per half block
    PLAIT_UNROLL
    for (int m = 0; m < M; ++m) acc[0][m] = acc[1][m] = vzero();
    float d[kChunk];
    for (int64_t c0 = 0; c0 < p.groups; c0 += kChunk) {  // groups c0 .. c0 + kChunk - 1
      const int64_t nc = std::min(kChunk, p.groups - c0);
      const uint16_t* dh = p.scale4 + n * p.groups + c0;
      int64_t g = 0;
      for (; g + 8 <= nc; g += 8) vstore(d + g, halves8(dh + g));
      for (; g < nc; ++g) d[g] = half(dh[g]);
      const int64_t b_end = ((c0 + nc) << p.group_shift) / 64;
      for (int64_t b = (c0 << p.group_shift) / 64; b < b_end; ++b) {
        prefetch(w + 32 * b + kPrefetch);
        const W8 wv = wload(w + 32 * b);
        const int64_t g0 = ((64 * b) >> p.group_shift) - c0;  // the groups of the halves
        const int64_t g1 = ((64 * b + 32) >> p.group_shift) - c0;
        half_block<M, 0>(p, x + 64 * b, wv, vset(d[g0]), acc[0]);
        half_block<M, 1>(p, x + 64 * b, wv, vset(d[g1]), acc[1]);
      }
    }
    PLAIT_UNROLL
    for (int m = 0; m < M; ++m)
      store(p, m0 + m, n, hsum(vadd(vadd(acc[0][m], acc[1][m]), min_term(p, n, m0 + m))));
  }
};

template <class Kernel, int M>
void pass(const Problem& p, int64_t begin, int64_t end, int64_t m0) {
  for (int64_t n = begin; n < end; ++n) Kernel::template run<M>(p, n, m0);
}

// weight rows [begin, end) against all rows of x, kMaxRows at a time; with more rows of x, a
// block of weight rows small enough for L2 meets every pass before the next block is read
template <class Kernel>
void rows_range(const Problem& p, int64_t begin, int64_t end) {
  const int64_t block = p.M <= kMaxRows ? end - begin : std::max<int64_t>(8, kL2Bytes / p.ldw);
  for (int64_t nb = begin; nb < end; nb += block) {
    const int64_t ne = std::min(end, nb + block);
    for (int64_t m0 = 0; m0 < p.M; m0 += kMaxRows) {
      switch (std::min<int64_t>(kMaxRows, p.M - m0)) {
        case 1: pass<Kernel, 1>(p, nb, ne, m0); break;
        case 2: pass<Kernel, 2>(p, nb, ne, m0); break;
        case 3: pass<Kernel, 3>(p, nb, ne, m0); break;
        default: pass<Kernel, 4>(p, nb, ne, m0);
      }
    }
  }
}

template <class Kernel>
void run_parallel(const Problem& p) {
  const int64_t grain = std::max<int64_t>(8, kMinWork / std::max<int64_t>(p.K, 1));
  at::parallel_for(0, p.N, grain, [&](int64_t b, int64_t e) { rows_range<Kernel>(p, b, e); });
}

// -- the operators ---------------------------------------------------------------------------
void check_common(const at::Tensor& x, const at::Tensor& qweight,
                  const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "x must be (M, K) float32");
  TORCH_CHECK(qweight.dim() == 2 && qweight.is_contiguous(), "qweight must be 2-D contiguous");
  if (bias) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->is_contiguous() &&
                bias->numel() == qweight.size(0), "bias must be (N,) contiguous float32");
  }
}

void check_int4(const at::Tensor& qweight, const at::Tensor& scale, const at::Tensor& mins,
                int64_t group) {
  const int64_t Kp = qweight.size(1) * 2;
  TORCH_CHECK(qweight.scalar_type() == at::kByte && qweight.is_contiguous() && Kp % 64 == 0,
              "qweight must be (N, Kp / 2) contiguous uint8, Kp a multiple of 64");
  TORCH_CHECK(group >= 32 && (group & (group - 1)) == 0 && Kp % group == 0,
              "group must be a power of two >= 32 dividing Kp");
  for (const at::Tensor* t : {&scale, &mins}) {
    TORCH_CHECK(t->scalar_type() == at::kHalf && t->is_contiguous() && t->dim() == 2 &&
                t->size(0) == qweight.size(0) && t->size(1) == Kp / group,
                "scale and mins must be (N, Kp / group) contiguous float16");
  }
}

at::Tensor int8_linear(const at::Tensor& x_in, const at::Tensor& qweight, const at::Tensor& scale,
                       const std::optional<at::Tensor>& bias) {
  check_common(x_in, qweight, bias);
  TORCH_CHECK(qweight.scalar_type() == at::kChar && qweight.size(1) == x_in.size(1) &&
              scale.scalar_type() == at::kFloat && scale.is_contiguous() &&
              scale.numel() == qweight.size(0), "need (N, K) int8 qweight, (N,) float32 scale");
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty({x.size(0), qweight.size(0)}, x.options());
  if (y.numel() == 0) return y;
  Problem p{};
  p.x = x.data_ptr<float>(), p.M = x.size(0), p.K = x.size(1), p.ldx = x.size(1);
  p.w = (const uint8_t*)qweight.data_ptr<int8_t>(), p.ldw = qweight.size(1);
  p.scale8 = scale.data_ptr<float>();
  p.bias = bias ? bias->data_ptr<float>() : nullptr;
  p.y = y.data_ptr<float>(), p.N = qweight.size(0);
  run_parallel<Int8Kernel>(p);
  return y;
}

// x scaled by 16^-j at its place j = (k mod 64) / 8 in a 64-input block (j = 7: unscaled), zero
// padded to Kp; and the sums of x over each group, zero padded to a multiple of 8 groups
constexpr float kNibbleScale[8] = {1.0f, 0x1p-4f, 0x1p-8f, 0x1p-12f, 0x1p-16f, 0x1p-20f,
                                   0x1p-24f, 1.0f};

void prepare_int4(const at::Tensor& x, int64_t Kp, int64_t group, std::vector<float>& xs,
                  std::vector<float>& sums) {
  const int64_t M = x.size(0), K = x.size(1), ld = (Kp / group + 7) / 8 * 8;
  xs.assign(M * Kp, 0.0f);
  sums.assign(M * ld, 0.0f);
  const float* src = x.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) {
      const float v = src[m * K + k];
      xs[m * Kp + k] = v * kNibbleScale[(k & 63) >> 3];
      sums[m * ld + k / group] += v;
    }
}

at::Tensor int4_linear(const at::Tensor& x_in, const at::Tensor& qweight, const at::Tensor& scale,
                       const at::Tensor& mins, const std::optional<at::Tensor>& bias,
                       int64_t group) {
  check_common(x_in, qweight, bias);
  check_int4(qweight, scale, mins, group);
  const int64_t Kp = qweight.size(1) * 2;
  TORCH_CHECK(Kp >= x_in.size(1) && Kp - x_in.size(1) < std::max<int64_t>(64, group),
              "x has ", x_in.size(1), " inputs, the weight ", Kp, " (padded)");
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty({x.size(0), qweight.size(0)}, x.options());
  if (y.numel() == 0) return y;
  std::vector<float> xs, sums;
  prepare_int4(x, Kp, group, xs, sums);
  Problem p{};
  p.x = xs.data(), p.M = x.size(0), p.K = Kp, p.ldx = Kp;
  p.w = qweight.data_ptr<uint8_t>(), p.ldw = qweight.size(1);
  p.scale4 = (const uint16_t*)scale.data_ptr<at::Half>();
  p.mins = (const uint16_t*)mins.data_ptr<at::Half>();
  p.xsum = sums.data(), p.ldxs = sums.size() / x.size(0), p.groups = Kp / group;
  while ((int64_t(1) << p.group_shift) < group) ++p.group_shift;
  p.bias = bias ? bias->data_ptr<float>() : nullptr;
  p.y = y.data_ptr<float>(), p.N = qweight.size(0);
  run_parallel<Int4Kernel>(p);
  return y;
}

// fp32 W (N, K) = d q + c from the packed int4 rows, for products of many rows (prefill). The
// multiply and the add round as PyTorch's do (-ffp-contract=off): W is dequantize_int4's.
template <int J>
inline void dequant8(W8 wv, V8 d, V8 c, float* out, int64_t valid) {
  const V8 v = vadd(vmul(nibble_q<J>(wv), d), c);  // inputs 8 J .. 8 J + 7 of the block
  if (valid >= 8) return vstore(out + 8 * J, v);
  float tmp[8];
  vstore(tmp, v);
  std::memcpy(out + 8 * J, tmp, std::max<int64_t>(valid, 0) * sizeof(float));
}

at::Tensor int4_dequant(const at::Tensor& qweight, const at::Tensor& scale,
                        const at::Tensor& mins, int64_t group, int64_t K) {
  check_int4(qweight, scale, mins, group);
  const int64_t N = qweight.size(0), Kp = qweight.size(1) * 2, groups = Kp / group;
  TORCH_CHECK(K <= Kp, "K must be at most the padded inputs");
  at::Tensor w = at::empty({N, K}, qweight.options().dtype(at::kFloat));
  const uint8_t* q = qweight.data_ptr<uint8_t>();
  const uint16_t* d = (const uint16_t*)scale.data_ptr<at::Half>();
  const uint16_t* c = (const uint16_t*)mins.data_ptr<at::Half>();
  float* out = w.data_ptr<float>();
  at::parallel_for(0, N, std::max<int64_t>(1, kMinWork / Kp), [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n)
      for (int64_t k0 = 0; k0 < K; k0 += 64) {
        const W8 wv = wload(q + n * (Kp / 2) + k0 / 2);
        const int64_t g0 = n * groups + k0 / group, g1 = n * groups + (k0 + 32) / group;
        const V8 d0 = vset(half(d[g0])), c0 = vset(half(c[g0]));
        const V8 d1 = vset(half(d[g1])), c1 = vset(half(c[g1]));
        float* o = out + n * K + k0;
        dequant8<0>(wv, d0, c0, o, K - k0);
        dequant8<1>(wv, d0, c0, o, K - k0 - 8);
        dequant8<2>(wv, d0, c0, o, K - k0 - 16);
        dequant8<3>(wv, d0, c0, o, K - k0 - 24);
        dequant8<4>(wv, d1, c1, o, K - k0 - 32);
        dequant8<5>(wv, d1, c1, o, K - k0 - 40);
        dequant8<6>(wv, d1, c1, o, K - k0 - 48);
        dequant8<7>(wv, d1, c1, o, K - k0 - 56);
      }
  });
  return w;
}

// how many threads at::parallel_for really runs over n items (its split is OpenMP's: without
// -fopenmp the header falls back to one thread, silently)
int64_t threads_used(int64_t n) {
  std::atomic<uint64_t> seen{0};
  at::parallel_for(0, n, 1, [&](int64_t, int64_t) {
    seen.fetch_or(uint64_t{1} << std::min<int64_t>(at::get_thread_num(), 63));
  });
  return __builtin_popcountll(seen.load());
}

}  // namespace

TORCH_LIBRARY(plait_quant, m) {
  m.def("int8_linear(Tensor x, Tensor qweight, Tensor scale, Tensor? bias) -> Tensor");
  m.def("int4_linear(Tensor x, Tensor qweight, Tensor scale, Tensor mins, Tensor? bias,"
        " int group) -> Tensor");
  m.def("int4_dequant(Tensor qweight, Tensor scale, Tensor mins, int group, int K) -> Tensor");
  m.def("threads_used(int n) -> int", &threads_used);
}

TORCH_LIBRARY_IMPL(plait_quant, CPU, m) {
  m.impl("int8_linear", &int8_linear);
  m.impl("int4_linear", &int4_linear);
  m.impl("int4_dequant", &int4_dequant);
}
