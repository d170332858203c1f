// Weight-only int8 / int4 products y = x W^T + b for a few rows of x, read straight from the
// packed weights (formats: plait/nn/quant.py; design and numbers: docs/efficiency.md §2).
// Built at first use by plait/nn/quant_kernel.py with the system compiler: with -mavx2 -mfma
// -mf16c where the CPU has them (V8 below is then a __m256), else as portable C++.
//
// Each thread takes a contiguous range of output rows (at::parallel_for, torch's thread count;
// built with -fopenmp, without which ATen's header runs the whole range on one thread)
// and streams them one row at a time: one sequential stream per thread, which the hardware
// prefetcher follows (several rows side by side read memory slower, measured). A weight is
// unpacked in registers once and used for up to 4 rows of x; nothing fp32 the size of W is
// ever written. Independent accumulators hide the FMA latency; they are 8-lane vectors,
// reduced across lanes once per output.
//
// int8 (per output row n, scale s_n), in fp32:   y[m, n] = s_n sum_k x[m, k] q[n, k] + b_n
// int4 (group g of G inputs: scale d_g, minimum c_g, w = d_g q + c_g), in integers: x is first
// rounded to 16 bits per half block h of 32 inputs, x ~= e_h r (r in [-32767, 32767], e_h =
// max |x| / 32767; prepare_int4), then
//   y[m, n] = sum_h d_g(h) e_h (sum_{k in h} q[n, k] r[m, k]) + sum_g c_g (sum_{k in g} e r) + b_n
// The inner sums are exact 32-bit integer dot products of 16-bit values (vpmaddwd: 16 products
// in one instruction), converted to float once per 32 weights; 64 weights cost about 20
// instructions for one row of x where multiplying in fp32 took about 26 (and 24 per more row).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
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

// -- eight floats; sixteen 16-bit integers ---------------------------------------------------
#ifdef PLAIT_AVX2
using V8 = __m256;
using Q16 = __m256i;
inline V8 vzero() { return _mm256_setzero_ps(); }
inline V8 vset(float v) { return _mm256_set1_ps(v); }
inline V8 vload(const float* p) { return _mm256_loadu_ps(p); }
inline V8 vmul(V8 a, V8 b) { return _mm256_mul_ps(a, b); }
inline V8 vadd(V8 a, V8 b) { return _mm256_add_ps(a, b); }
inline V8 vfma(V8 a, V8 b, V8 c) { return _mm256_fmadd_ps(a, b, c); }
inline V8 from_i8(const int8_t* p) {  // 8 int8 -> 8 floats
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p)));
}
// the 32 int4 values of 16 bytes: low nibbles (inputs 0..15), high nibbles (16..31)
inline void nibbles(const uint8_t* p, Q16& lo, Q16& hi) {
  const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)p));
  lo = _mm256_and_si256(b, _mm256_set1_epi16(15));
  hi = _mm256_srli_epi16(b, 4);
}
// sum_k q[k] r[k] over each half of a 64-input block, as floats; lanes 0, 1, 4, 5 hold parts of
// the first half's sum, lanes 2, 3, 6, 7 of the second's (the order of vphaddd)
inline V8 block_sums(const Q16 q[4], const int16_t* r) {
  auto dot = [&](int i) {
    return _mm256_madd_epi16(q[i], _mm256_loadu_si256((const __m256i*)(r + 16 * i)));
  };
  const __m256i h0 = _mm256_add_epi32(dot(0), dot(1)), h1 = _mm256_add_epi32(dot(2), dot(3));
  return _mm256_cvtepi32_ps(_mm256_hadd_epi32(h0, h1));
}
// two fp16 scales (the halves of a block) in block_sums' lane order: a a b b a a b b
inline V8 pair_scales(const uint16_t* d) {
  uint32_t two;
  std::memcpy(&two, d, sizeof two);
  const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(int(two)));
  return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(f),
                                  _mm256_setr_epi32(0, 0, 1, 1, 0, 0, 1, 1));
}
inline V8 halves8(const uint16_t* h) {  // 8 fp16 -> 8 floats
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)h));
}
// the 32 weights d q + c of a half block's 16 bytes, in input order (a multiply, then an add)
inline void dequant32(const uint8_t* p, float d, float c, float* out) {
  const __m256 dv = _mm256_set1_ps(d), cv = _mm256_set1_ps(c);
  for (int j = 0; j < 2; ++j) {  // bytes 8 j .. 8 j + 7: inputs 8 j + i and 16 + 8 j + i
    const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(p + 8 * j)));
    const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(15)));
    const __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
    _mm256_storeu_ps(out + 8 * j, _mm256_add_ps(_mm256_mul_ps(lo, dv), cv));
    _mm256_storeu_ps(out + 16 + 8 * j, _mm256_add_ps(_mm256_mul_ps(hi, dv), cv));
  }
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
struct Q16 { int32_t v[16]; };
#define PLAIT_LANES(expr) for (int l = 0; l < 8; ++l) expr
inline V8 vzero() { return V8{}; }
inline V8 vset(float x) { V8 r; PLAIT_LANES(r.v[l] = x); return r; }
inline V8 vload(const float* p) { V8 r; std::memcpy(r.v, p, sizeof r.v); return r; }
inline V8 vmul(V8 a, V8 b) { PLAIT_LANES(a.v[l] *= b.v[l]); return a; }
inline V8 vadd(V8 a, V8 b) { PLAIT_LANES(a.v[l] += b.v[l]); return a; }
inline V8 vfma(V8 a, V8 b, V8 c) { PLAIT_LANES(c.v[l] += a.v[l] * b.v[l]); return c; }
inline V8 from_i8(const int8_t* p) { V8 r; PLAIT_LANES(r.v[l] = p[l]); return r; }
inline void nibbles(const uint8_t* p, Q16& lo, Q16& hi) {
  for (int i = 0; i < 16; ++i) lo.v[i] = p[i] & 15, hi.v[i] = p[i] >> 4;
}
inline V8 block_sums(const Q16 q[4], const int16_t* r) {  // whole sums in lanes 0 and 2
  int32_t s[2] = {0, 0};
  for (int i = 0; i < 4; ++i)
    for (int l = 0; l < 16; ++l) s[i / 2] += q[i].v[l] * int32_t(r[16 * i + l]);
  V8 out = vzero();
  out.v[0] = float(s[0]), out.v[2] = float(s[1]);
  return out;
}
inline float half(uint16_t h) { return float(c10::Half(h, c10::Half::from_bits())); }
inline V8 pair_scales(const uint16_t* d) {
  const float a = half(d[0]), b = half(d[1]);
  return V8{{a, a, b, b, a, a, b, b}};
}
inline V8 halves8(const uint16_t* h) { V8 r; PLAIT_LANES(r.v[l] = half(h[l])); return r; }
inline void dequant32(const uint8_t* p, float d, float c, float* out) {
  for (int i = 0; i < 16; ++i) {
    out[i] = float(p[i] & 15) * d + c;
    out[16 + i] = float(p[i] >> 4) * d + c;
  }
}
inline float hsum(V8 v) { float s = 0; PLAIT_LANES(s += v.v[l]); return s; }
inline void prefetch(const void* p) { __builtin_prefetch(p); }
#endif

// -- one product: pointers and sizes shared by every thread --------------------------------
struct Problem {
  const float* x;          // int8: (M, ldx) x itself
  const int16_t* r;        // int4: (M, ldx) x rounded to 16 bits per 32 inputs, zero padded
  const float* e;          // int4: (M, lde) the half blocks' steps e_h, 8 lanes per block
  int64_t M, K, ldx, lde;  // K: inputs (int8) or padded inputs, a multiple of 64 (int4)
  const uint8_t* w; int64_t ldw;  // weight rows, ldw bytes apart
  const float* scale8;     // int8: (N,) fp32
  const uint16_t* scale4;  // int4: (N, groups) fp16 bits
  const uint16_t* mins;    // int4: (N, groups) fp16 bits
  const float* xsum;       // int4: (M, ldxs): sums of e r over each group, zero padded
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

  // block b (inputs 64 b .. 64 b + 63) of weight row w against M rows of x, into acc
  template <int M>
  static inline void block(const Problem& p, const uint8_t* w, const uint16_t* d, int64_t b,
                           int64_t m0, V8* acc) {
    prefetch(w + 32 * b + kPrefetch);
    Q16 q[4];
    nibbles(w + 32 * b, q[0], q[1]);
    nibbles(w + 32 * b + 16, q[2], q[3]);
    // d of both halves, in block_sums' lane order (G >= 64: one group covers the block)
    const V8 dv = p.group_shift == 5 ? pair_scales(d + 2 * b)
                                     : vset(half(d[(64 * b) >> p.group_shift]));
    PLAIT_UNROLL
    for (int m = 0; m < M; ++m) {
      const V8 s = block_sums(q, p.r + (m0 + m) * p.ldx + 64 * b);
      acc[m] = vfma(s, vmul(dv, vload(p.e + (m0 + m) * p.lde + 8 * b)), acc[m]);
    }
  }

  template <int M>
  static void run(const Problem& p, int64_t n, int64_t m0) {
    const uint8_t* w = p.w + n * p.ldw;
    const uint16_t* d = p.scale4 + n * p.groups;
    V8 acc[2][M];  // even and odd blocks: two chains of FMAs
    PLAIT_UNROLL
    for (int m = 0; m < M; ++m) acc[0][m] = acc[1][m] = vzero();
    const int64_t blocks = p.K / 64;
    int64_t b = 0;
    for (; b + 2 <= blocks; b += 2) {
      block<M>(p, w, d, b, m0, acc[0]);
      block<M>(p, w, d, b + 1, m0, acc[1]);
    }
    if (b < blocks) block<M>(p, w, d, b, m0, acc[0]);
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

// x rounded to 16 bits per half block h of 32 inputs (zero padded to Kp): r = round(x / e_h),
// e_h = max_{k in h} |x_k| / 32767, ties to even, as plait.nn.quant.round_int16 does in torch;
// e_h in block_sums' lane order, 8 per block; and the sums of e r over each group, zero padded
// to a multiple of 8 groups
struct Rounded {
  std::vector<int16_t> r;
  std::vector<float> e, sums;
};

void prepare_int4(const at::Tensor& x, int64_t Kp, int64_t group, Rounded& out) {
  const int64_t M = x.size(0), K = x.size(1), blocks = Kp / 64, ld = (Kp / group + 7) / 8 * 8;
  out.r.assign(M * Kp, 0);
  out.e.assign(M * blocks * 8, 0.0f);
  out.sums.assign(M * ld, 0.0f);
  const float* src = x.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t h = 0; h < Kp / 32; ++h) {
      const float* v = src + m * K + 32 * h;
      const int64_t n = std::clamp<int64_t>(K - 32 * h, 0, 32);
      float top = 0.0f;
      for (int64_t i = 0; i < n; ++i) top = std::max(top, std::fabs(v[i]));
      const float e = top / 32767.0f;
      int32_t total = 0;
      if (e > 0.0f) {
        for (int64_t i = 0; i < n; ++i) {
          const float q = std::clamp(std::nearbyint(v[i] / e), -32767.0f, 32767.0f);
          out.r[m * Kp + 32 * h + i] = int16_t(q);
          total += int32_t(q);
        }
      }
      float* lanes = out.e.data() + (m * blocks + h / 2) * 8 + (h & 1) * 2;
      lanes[0] = lanes[1] = lanes[4] = lanes[5] = e;
      out.sums[m * ld + 32 * h / group] += e * float(total);
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
  Rounded rounded;
  prepare_int4(x, Kp, group, rounded);
  Problem p{};
  p.r = rounded.r.data(), p.e = rounded.e.data();
  p.M = x.size(0), p.K = Kp, p.ldx = Kp, p.lde = Kp / 64 * 8;
  p.w = qweight.data_ptr<uint8_t>(), p.ldw = qweight.size(1);
  p.scale4 = (const uint16_t*)scale.data_ptr<at::Half>();
  p.mins = (const uint16_t*)mins.data_ptr<at::Half>();
  p.xsum = rounded.sums.data(), p.ldxs = rounded.sums.size() / x.size(0);
  p.groups = Kp / group;
  while ((int64_t(1) << p.group_shift) < group) ++p.group_shift;
  p.bias = bias ? bias->data_ptr<float>() : nullptr;
  p.y = y.data_ptr<float>(), p.N = qweight.size(0);
  run_parallel<Int4Kernel>(p);
  return y;
}

// fp32 W (N, K) = d q + c from the packed int4 rows, for products of many rows (prefill). The
// multiply and the add round as PyTorch's do (-ffp-contract=off): W is dequantize_int4's.
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
      for (int64_t h = 0; 32 * h < K; ++h) {  // half block h: 16 bytes, 32 inputs
        const int64_t g = n * groups + 32 * h / group;
        const uint8_t* bytes = q + n * (Kp / 2) + 16 * h;
        if (32 * h + 32 <= K) {
          dequant32(bytes, half(d[g]), half(c[g]), out + n * K + 32 * h);
        } else {  // the row's last, partial half block
          float row[32];
          dequant32(bytes, half(d[g]), half(c[g]), row);
          std::memcpy(out + n * K + 32 * h, row, (K - 32 * h) * sizeof(float));
        }
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
