// One gradient-descent step of the full-feature UFM loss (docs/theory.md §6 F1), float32 on CPU, as
// an XLA FFI custom call that reads H once and writes it once:
//
//   R = H W^T + 1 b^T - Y
//   W <- W - eta (R^T H / n + lam_W W)
//   b <- b - eta (R^T 1 / n + lam_b b)
//   H <- (1 - eta lam_H) H - (eta / n) R W          (the old W)
//
// XLA runs the three C-wide products as separate library calls, each a pass over H, and cannot
// fuse them with the update. Here each block of kRows rows gives its logits, its share of R^T H
// and R^T 1, and its new rows while it sits in cache, so H crosses the memory bus once each way.
// experiments/bench_roofline.py builds it with the host's C++ compiler (-march=native) and times it
// against the roofline floor. It runs on XLA's intra-op threads (no OpenMP pool competing with
// them for the cores). It measures how close the step can get; it is not part of the centralpath
// package, whose steps stay portable XLA for CPU, GPU and TPU.
//
// In place: the output H may alias the input H. A block's rows are read whole (the logits)
// before any of them is written, and the second sweep over a block reads each column chunk
// before it writes it.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 8;  // floats per 256-bit vector
typedef float vec __attribute__((vector_size(4 * kLanes)));
typedef float vec4 __attribute__((vector_size(16)));

inline vec load(const float* p) {
  vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vec v) { std::memcpy(p, &v, sizeof v); }
inline float hsum(vec v) {
  vec4 s = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  s += __builtin_shufflevector(s, s, 2, 3, 0, 1);
  s += __builtin_shufflevector(s, s, 1, 0, 3, 2);
  return s[0];
}

// The tiling, chosen by timing single-core g++ 12 builds at C = 10, p = 512 (GFLOP/s of the
// whole step on one core, where the core's FMA peak is ~93 and XLA's square sgemm ~75): 12-row
// blocks with 5-class tiles of R^T H and 4-row tiles of R W reach ~60; 8-row blocks ~52; the
// first version (4-row blocks, R^T H and R W in one sweep whose 10-long FMA chains stalled) ~43.
constexpr int kRows = 12;        // rows per block: a column chunk of G is loaded once per block
constexpr int kGramClasses = 5;  // classes per tile of R^T H: 10 accumulators + 2 rows + 1
constexpr int kUpdateRows = 4;   // rows per tile of R W: 8 accumulators + 2 of W + 1
constexpr int kMaxClasses = 16;  // C is a template parameter: its accumulators live in registers
static_assert(kRows % kUpdateRows == 0);
constexpr int64_t kParts = 16;  // units of work shared among threads (each adds C x p to reduce)

// z[k][c] = <h_k, w_c> for the rows of a block, one row at a time: C vector accumulators, each
// loaded chunk of h used C times. W and G have row stride ps (not p), see Step.
template <int C>
void block_logits(int rows, const float* h, int64_t p, int64_t ps, const float* __restrict W,
                  float (*z)[C]) {
  const int64_t p8 = p - p % kLanes;
  for (int k = 0; k < rows; ++k, h += p) {
    vec acc[C];
    for (int c = 0; c < C; ++c) acc[c] = vec{};
    for (int64_t j = 0; j < p8; j += kLanes) {
      const vec x = load(h + j);
      for (int c = 0; c < C; ++c) acc[c] += x * load(W + c * ps + j);
    }
    for (int c = 0; c < C; ++c) {
      float s = hsum(acc[c]);
      for (int64_t j = p8; j < p; ++j) s += h[j] * W[c * ps + j];
      z[k][c] = s;
    }
  }
}

// G[c0 + c][j, j + 16) += sum_k r[k][c0 + c] h_k[j, j + 16) over a full block, CT classes.
template <int C, int CT>
inline void gram_tile(const float* h, int64_t p, int64_t ps, int64_t j, const float (*r)[C],
                      int c0, float* __restrict G) {
  vec acc[CT][2];
  for (int c = 0; c < CT; ++c) {
    acc[c][0] = load(G + (c0 + c) * ps + j);
    acc[c][1] = load(G + (c0 + c) * ps + j + kLanes);
  }
  for (int k = 0; k < kRows; ++k) {
    const vec x0 = load(h + k * p + j), x1 = load(h + k * p + j + kLanes);
    for (int c = 0; c < CT; ++c) {
      acc[c][0] += r[k][c0 + c] * x0;
      acc[c][1] += r[k][c0 + c] * x1;
    }
  }
  for (int c = 0; c < CT; ++c) {
    store(G + (c0 + c) * ps + j, acc[c][0]);
    store(G + (c0 + c) * ps + j + kLanes, acc[c][1]);
  }
}

// All classes' tiles: full ones of kGramClasses, then the remainder (compile-time recursion).
template <int C, int c0 = 0>
inline void gram_cols(const float* h, int64_t p, int64_t ps, int64_t j, const float (*r)[C],
                      float* __restrict G) {
  if constexpr (c0 + kGramClasses <= C) {
    gram_tile<C, kGramClasses>(h, p, ps, j, r, c0, G);
    gram_cols<C, c0 + kGramClasses>(h, p, ps, j, r, G);
  } else if constexpr (c0 < C) {
    gram_tile<C, C - c0>(h, p, ps, j, r, c0, G);
  }
}

// out_k[j, j + 16) = decay h_k - scale sum_c r[k][c] w_c for kUpdateRows rows.
template <int C>
inline void update_tile(const float* h, float* out, int64_t p, int64_t ps, int64_t j,
                        const float (*r)[C], const float* __restrict W, float decay, float scale) {
  vec u[kUpdateRows][2] = {};
  for (int c = 0; c < C; ++c) {
    const vec w0 = load(W + c * ps + j), w1 = load(W + c * ps + j + kLanes);
    for (int k = 0; k < kUpdateRows; ++k) {
      u[k][0] += r[k][c] * w0;
      u[k][1] += r[k][c] * w1;
    }
  }
  for (int k = 0; k < kUpdateRows; ++k) {
    store(out + k * p + j, decay * load(h + k * p + j) - scale * u[k][0]);
    store(out + k * p + j + kLanes, decay * load(h + k * p + j + kLanes) - scale * u[k][1]);
  }
}

// Columns [j0, p) of `rows` rows, one scalar at a time: the column tail of a full block, or the
// whole of a short last block.
template <int C>
void scalar_columns(int rows, int64_t j0, const float* h, float* out, int64_t p, int64_t ps,
                    const float (*r)[C], const float* __restrict W, float* __restrict G,
                    float decay, float scale) {
  for (int k = 0; k < rows; ++k)
    for (int64_t j = j0; j < p; ++j) {
      const float x = h[k * p + j];
      float u = 0.0f;
      for (int c = 0; c < C; ++c) {
        u += r[k][c] * W[c * ps + j];
        G[c * ps + j] += r[k][c] * x;
      }
      out[k * p + j] = decay * x - scale * u;
    }
}

// Rows [lo, hi) of the one pass; G [C, ps] and gb [C] are this thread's partial sums.
template <int C>
void pass(int64_t lo, int64_t hi, int64_t p, int64_t ps, const float* __restrict W,
          const float* __restrict b, const float* H, const float* __restrict Y, float* Hout,
          float* __restrict G, float* __restrict gb, float decay, float scale) {
  const int64_t p16 = p - p % (2 * kLanes);
  for (int64_t i = lo; i < hi; i += kRows) {
    const int rows = int(std::min<int64_t>(kRows, hi - i));
    const float* h = H + i * p;
    float* out = Hout + i * p;
    float r[kRows][C];
    block_logits<C>(rows, h, p, ps, W, r);
    for (int k = 0; k < rows; ++k)
      for (int c = 0; c < C; ++c) {
        r[k][c] += b[c] - Y[(i + k) * C + c];
        gb[c] += r[k][c];
      }
    if (rows < kRows) {
      scalar_columns<C>(rows, 0, h, out, p, ps, r, W, G, decay, scale);
      continue;
    }
    // Every read of the block's rows below hits L1 or L2: the logits just streamed them in.
    for (int64_t j = 0; j < p16; j += 2 * kLanes) {
      gram_cols<C>(h, p, ps, j, r, G);
      for (int k = 0; k < kRows; k += kUpdateRows)
        update_tile<C>(h + k * p, out + k * p, p, ps, j, r + k, W, decay, scale);
    }
    scalar_columns<C>(rows, p16, h, out, p, ps, r, W, G, decay, scale);
  }
}

using PassFn = void (*)(int64_t, int64_t, int64_t, int64_t, const float*, const float*,
                        const float*, const float*, float*, float*, float*, float, float);

template <int... Cs>
PassFn pass_for(int64_t C, std::integer_sequence<int, Cs...>) {
  constexpr PassFn table[] = {&pass<Cs + 1>...};
  return (C >= 1 && C <= int64_t(sizeof...(Cs))) ? table[C - 1] : nullptr;
}

ffi::Error Step(ffi::ThreadPool pool, ffi::BufferR0<ffi::F32> eta_, ffi::BufferR0<ffi::F32> lam_w_,
                ffi::BufferR0<ffi::F32> lam_h_, ffi::BufferR0<ffi::F32> lam_b_,
                ffi::Buffer<ffi::F32> W_, ffi::Buffer<ffi::F32> b_, ffi::Buffer<ffi::F32> H_,
                ffi::Buffer<ffi::F32> Y_, ffi::ResultBuffer<ffi::F32> W_out,
                ffi::ResultBuffer<ffi::F32> b_out, ffi::ResultBuffer<ffi::F32> H_out) {
  const auto wd = W_.dimensions(), bd = b_.dimensions(), hd = H_.dimensions(),
             yd = Y_.dimensions();
  if (wd.size() != 2 || bd.size() != 1 || hd.size() != 2 || yd.size() != 2 || wd[1] != hd[1] ||
      bd[0] != wd[0] || yd[0] != hd[0] || yd[1] != wd[0])
    return ffi::Error::InvalidArgument("ufm_gd_step: expected W [C, p], b [C], H [n, p], Y [n, C]");
  const int64_t C = wd[0], p = wd[1], n = hd[0];
  const PassFn pass_rows = pass_for(C, std::make_integer_sequence<int, kMaxClasses>{});
  if (pass_rows == nullptr || n == 0)
    return ffi::Error::InvalidArgument("ufm_gd_step: needs 1 to 16 classes and at least one row");
  const float eta = *eta_.typed_data(), lam_w = *lam_w_.typed_data(),
              lam_h = *lam_h_.typed_data(), lam_b = *lam_b_.typed_data();
  const float decay = 1.0f - eta * lam_h, scale = eta / float(n);
  const float *W = W_.typed_data(), *b = b_.typed_data(), *H = H_.typed_data(),
              *Y = Y_.typed_data();

  // W and the partial sums G get a row stride of p + 16 floats: with p a multiple of 512, rows
  // 2 KiB apart (of W, G and H) fall in the same L1 sets and evict one another (measured: the
  // step is ~10% slower without the padding at p = 512).
  const int64_t ps = p + 2 * kLanes;
  std::vector<float> Wp(size_t(C * ps), 0.0f);
  for (int64_t c = 0; c < C; ++c) std::copy(W + c * p, W + (c + 1) * p, Wp.begin() + c * ps);

  // The rows split into a fixed number of parts (whole blocks each), each with its own partial
  // sums; XLA's intra-op threads and the caller take parts as they come free, so a thread slowed
  // by another process leaves its share to the others. The partial sums are added in part order,
  // so the result does not depend on the thread count or on which thread ran which part.
  const int64_t blocks = (n + kRows - 1) / kRows;
  const int64_t parts = std::min<int64_t>(kParts, blocks);
  std::vector<float> G(size_t(parts * C * ps), 0.0f), gb(size_t(parts * C), 0.0f);
  float* Hout = H_out->typed_data();
  // The caller waits for the parts, not for the helpers: a helper that XLA's pool starts only
  // after every part is done (its threads busy elsewhere) finds none left and touches nothing
  // but this shared state, which it keeps alive. Waiting for the helpers themselves could wait
  // on a pool thread that is waiting on something else.
  struct Parts {
    std::atomic<int64_t> next{0}, done{0};
    std::function<void(int64_t)> run;  // reads the caller's frame: only called for a part < count
    int64_t count = 0;
    void drain() {
      for (int64_t q; (q = next.fetch_add(1, std::memory_order_relaxed)) < count;) {
        run(q);
        done.fetch_add(1, std::memory_order_release);
      }
    }
  };
  auto shared = std::make_shared<Parts>();
  shared->count = parts;
  shared->run = [&](int64_t q) {
    const int64_t lo = std::min(n, blocks * q / parts * kRows);
    const int64_t hi = std::min(n, blocks * (q + 1) / parts * kRows);
    pass_rows(lo, hi, p, ps, Wp.data(), b, H, Y, Hout, G.data() + q * C * ps, gb.data() + q * C,
              decay, scale);
  };
  for (int64_t t = 1; t < std::min<int64_t>(pool.num_threads(), parts); ++t)
    pool.Schedule([shared] { shared->drain(); });
  shared->drain();
  while (shared->done.load(std::memory_order_acquire) < parts) std::this_thread::yield();

  float *Wn = W_out->typed_data(), *bn = b_out->typed_data();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t j = 0; j < p; ++j) {
      float g = 0.0f;
      for (int64_t q = 0; q < parts; ++q) g += G[(q * C + c) * ps + j];
      const float w = W[c * p + j];
      Wn[c * p + j] = w - eta * (g / float(n) + lam_w * w);
    }
  for (int64_t c = 0; c < C; ++c) {
    float g = 0.0f;
    for (int64_t q = 0; q < parts; ++q) g += gb[q * C + c];
    bn[c] = b[c] - eta * (g / float(n) + lam_b * b[c]);
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(UfmGdStep, Step,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::BufferR0<ffi::F32>>()  // eta
                                  .Arg<ffi::BufferR0<ffi::F32>>()  // lam_W
                                  .Arg<ffi::BufferR0<ffi::F32>>()  // lam_H
                                  .Arg<ffi::BufferR0<ffi::F32>>()  // lam_b
                                  .Arg<ffi::Buffer<ffi::F32>>()    // W [C, p]
                                  .Arg<ffi::Buffer<ffi::F32>>()    // b [C]
                                  .Arg<ffi::Buffer<ffi::F32>>()    // H [n, p]
                                  .Arg<ffi::Buffer<ffi::F32>>()    // Y [n, C] one-hot
                                  .Ret<ffi::Buffer<ffi::F32>>()    // W
                                  .Ret<ffi::Buffer<ffi::F32>>()    // b
                                  .Ret<ffi::Buffer<ffi::F32>>());  // H (may alias the input H)
