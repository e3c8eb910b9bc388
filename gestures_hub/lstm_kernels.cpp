// The grid's LSTM recurrence, one model at a time, for stacked models with bfloat16 matrix products on CPUs with
// AMX (see gestures_hub/lstm_kernels.py). A model's step (its B x 4H gates, its recurrent matrix) stays in the core's
// caches from step to step; the recurrent products are oneDNN brgemm micro-kernels with float32 accumulation.
// Gates are ordered (i, f, o, g); tanh(x) is computed as 2 sigmoid(2x) - 1, as in stacked_model.forward_step.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/native/CPUBlas.h>
#include <fbgemm/Utils.h>
#include <immintrin.h>

#include <vector>

namespace {

using at::BFloat16;
using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = 16;

inline __m512 load_bf16(const BFloat16* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}

inline void store_bf16(BFloat16* p, __m512 x) {
  _mm256_storeu_si256((__m256i*)p, (__m256i)_mm512_cvtneps_pbh(x));
}

inline __m512 sigmoid(__m512 x) {  // exp_u20: at most 20 ULP from exp, 2x faster than Sleef's u10
  const __m512 one = _mm512_set1_ps(1.0f);
  __m512 e = Vec(_mm512_sub_ps(_mm512_setzero_ps(), x)).exp_u20();
  return _mm512_div_ps(one, _mm512_add_ps(one, e));
}

inline __m512 tanh_(__m512 x) {  // 2 sigmoid(2x) - 1
  const __m512 s = sigmoid(_mm512_add_ps(x, x));
  return _mm512_sub_ps(_mm512_add_ps(s, s), _mm512_set1_ps(1.0f));
}

void check(const torch::Tensor& t, at::ScalarType dtype, int64_t dims, const char* name) {
  TORCH_CHECK(t.scalar_type() == dtype && t.dim() == dims && t.is_contiguous() && t.device().is_cpu(),
              name, ": expected a contiguous ", dims, "-d CPU tensor of ", dtype);
}

// Forward pass of one direction over all steps. pre: (M, T, B, 4H) bf16 input parts of the pre-activations;
// weight: (M, H, 4H) bf16 recurrent matrices (inputs on the left); bias: (M, 4H) f32.
// Writes every step's gate activations (M, T, B, 4H) f32, cell states and their tanh (M, T, B, H) f32 and recurrent
// inputs (M, T, B, H) bf16 (the hidden state of the step before, in the forward order; zeros for the first step), in
// time order; returns the final hidden state (M, B, H) f32.
torch::Tensor forward(const torch::Tensor& pre, const torch::Tensor& weight, const torch::Tensor& bias, bool reverse,
                      const torch::Tensor& gates, const torch::Tensor& cells, const torch::Tensor& tanhs,
                      const torch::Tensor& hiddens) {
  check(pre, at::kBFloat16, 4, "pre");
  check(weight, at::kBFloat16, 3, "weight");
  check(bias, at::kFloat, 2, "bias");
  const int64_t M = pre.size(0), T = pre.size(1), B = pre.size(2), G = pre.size(3), H = G / 4;
  TORCH_CHECK(H % kLanes == 0 && weight.size(0) == M && weight.size(1) == H && weight.size(2) == G,
              "weight: expected (M, H, 4H) with H a multiple of 16");
  check(gates, at::kFloat, 4, "gates");
  check(cells, at::kFloat, 4, "cells");
  check(tanhs, at::kFloat, 4, "tanhs");
  check(hiddens, at::kBFloat16, 4, "hiddens");
  TORCH_CHECK(gates.sizes() == pre.sizes() && cells.sizes() == hiddens.sizes() && tanhs.sizes() == hiddens.sizes() &&
              hiddens.size(3) == H, "outputs: expected gates (M, T, B, 4H) and cells, tanhs, hiddens (M, T, B, H)");
  auto final_hidden = torch::empty({M, B, H}, pre.options().dtype(at::kFloat));
  const BFloat16 *pre_p = pre.data_ptr<BFloat16>(), *w_p = weight.data_ptr<BFloat16>();
  const float* bias_p = bias.data_ptr<float>();
  float *gates_p = gates.data_ptr<float>(), *cells_p = cells.data_ptr<float>(), *tanhs_p = tanhs.data_ptr<float>();
  BFloat16* hid_p = hiddens.data_ptr<BFloat16>();
  float* final_p = final_hidden.data_ptr<float>();
  at::parallel_for(0, M, 1, [&](int64_t first, int64_t last) {
    std::vector<float> product(B * G);
    std::vector<BFloat16> packed(H * G);
    for (int64_t m = first; m < last; ++m) {
      const BFloat16* w = packed.data();
      at::vec::pack_vnni2(w_p + m * H * G, packed.data(), G, H, G);
      const float* bm = bias_p + m * G;
      const float* previous_cell = nullptr;
      const BFloat16* previous_hidden = nullptr;
      for (int64_t n = 0; n < T; ++n) {
        const int64_t t = reverse ? T - 1 - n : n;
        if (previous_hidden) {
          at::native::cpublas::brgemm(B, G, H, H, G, G, false, previous_hidden, w, product.data());
        }
        const int64_t base = (m * T + t) * B;
        // this step's hidden state is the next step's recurrent input: stored in the next step's slot
        BFloat16* next_hidden = n < T - 1 ? hid_p + (m * T + (reverse ? t - 1 : t + 1)) * B * H : nullptr;
        if (n == 0) std::fill(hid_p + base * H, hid_p + (base + B) * H, BFloat16(0.0f));
        for (int64_t b = 0; b < B; ++b) {
          const BFloat16* pre_row = pre_p + (base + b) * G;
          float* gate_row = gates_p + (base + b) * G;
          const float* prod_row = product.data() + b * G;
          for (int64_t j = 0; j < G; j += kLanes) {
            __m512 x = _mm512_add_ps(load_bf16(pre_row + j), _mm512_loadu_ps(bm + j));
            if (previous_hidden) x = _mm512_add_ps(x, _mm512_loadu_ps(prod_row + j));
            _mm512_storeu_ps(gate_row + j, j < 3 * H ? sigmoid(x) : tanh_(x));
          }
          float* cell_row = cells_p + (base + b) * H;
          float* tanh_row = tanhs_p + (base + b) * H;
          BFloat16* hid_row = next_hidden ? next_hidden + b * H : nullptr;
          for (int64_t j = 0; j < H; j += kLanes) {
            __m512 c = _mm512_mul_ps(_mm512_loadu_ps(gate_row + j), _mm512_loadu_ps(gate_row + 3 * H + j));
            if (previous_cell) {
              c = _mm512_fmadd_ps(_mm512_loadu_ps(gate_row + H + j), _mm512_loadu_ps(previous_cell + b * H + j), c);
            }
            __m512 tc = tanh_(c);
            __m512 h = _mm512_mul_ps(_mm512_loadu_ps(gate_row + 2 * H + j), tc);
            _mm512_storeu_ps(cell_row + j, c);
            _mm512_storeu_ps(tanh_row + j, tc);
            if (hid_row) {
              store_bf16(hid_row + j, h);
            } else {
              _mm512_storeu_ps(final_p + (m * B + b) * H + j, h);
            }
          }
        }
        previous_cell = cells_p + base * H;
        previous_hidden = next_hidden;
      }
    }
    at::native::cpublas::brgemm_release();
  });
  return final_hidden;
}

// Backward pass of one direction. gates, cells, tanhs: forward()'s; grad_hidden: (M, B, H) f32 gradient of the final
// hidden state; weight: (M, H, 4H) bf16 recurrent matrices, as forward()'s.
// Writes the pre-activation gradients transposed into grads, (M, 4H, T x B) bf16 (column t x B + b: step t, sequence
// b; the layout the weight gradients' products read fastest); returns the bias gradient (M, 4H) f32.
torch::Tensor backward(const torch::Tensor& gates, const torch::Tensor& cells, const torch::Tensor& tanhs,
                       const torch::Tensor& grad_hidden, const torch::Tensor& weight, bool reverse,
                       const torch::Tensor& grads) {
  check(gates, at::kFloat, 4, "gates");
  check(cells, at::kFloat, 4, "cells");
  check(tanhs, at::kFloat, 4, "tanhs");
  check(grad_hidden, at::kFloat, 3, "grad_hidden");
  check(weight, at::kBFloat16, 3, "weight");
  const int64_t M = gates.size(0), T = gates.size(1), B = gates.size(2), G = gates.size(3), H = G / 4;
  check(grads, at::kBFloat16, 3, "grads");
  TORCH_CHECK(weight.size(0) == M && weight.size(1) == H && weight.size(2) == G, "weight: expected (M, H, 4H)");
  TORCH_CHECK(grads.size(0) == M && grads.size(1) == G && grads.size(2) == T * B, "grads: expected (M, 4H, T x B)");
  auto grad_bias = torch::zeros({M, G}, gates.options());
  const float *gates_p = gates.data_ptr<float>(), *cells_p = cells.data_ptr<float>();
  const float *tanhs_p = tanhs.data_ptr<float>(), *gh_p = grad_hidden.data_ptr<float>();
  const BFloat16* w_p = weight.data_ptr<BFloat16>();
  BFloat16* grads_p = grads.data_ptr<BFloat16>();
  float* gb_p = grad_bias.data_ptr<float>();
  at::parallel_for(0, M, 1, [&](int64_t first, int64_t last) {
    std::vector<float> grad_h(B * H), grad_c(B * H);
    // one step's gradients (B, 4H), all steps' transposed (4H, T x B), the recurrent matrix
    std::vector<BFloat16> tile(B * G), columns(G * T * B), packed(G * H);
    for (int64_t m = first; m < last; ++m) {
      std::copy(gh_p + m * B * H, gh_p + (m + 1) * B * H, grad_h.begin());
      std::fill(grad_c.begin(), grad_c.end(), 0.0f);
      // the transposed matrix (4H, H) in VNNI layout, (2H, H, 2): pairs of a row's neighbours, as 32-bit units of
      // the matrix seen as (H, 2H), transposed
      fbgemm::transpose_simd<float>(H, G / 2, reinterpret_cast<const float*>(w_p + m * H * G), G / 2,
                                    reinterpret_cast<float*>(packed.data()), H);
      float* gb = gb_p + m * G;
      for (int64_t n = 0; n < T; ++n) {
        const int64_t t = reverse ? n : T - 1 - n;
        const bool first_step = n == T - 1;  // the first step in the forward order: no previous cell
        const int64_t base = (m * T + t) * B, previous = (m * T + (reverse ? t + 1 : t - 1)) * B;
        for (int64_t b = 0; b < B; ++b) {
          const float* g = gates_p + (base + b) * G;
          const float* tc_row = tanhs_p + (base + b) * H;
          const float* pc_row = first_step ? nullptr : cells_p + (previous + b) * H;
          BFloat16* out = tile.data() + b * G;
          for (int64_t j = 0; j < H; j += kLanes) {
            const __m512 one = _mm512_set1_ps(1.0f);
            __m512 i = _mm512_loadu_ps(g + j), f = _mm512_loadu_ps(g + H + j);
            __m512 o = _mm512_loadu_ps(g + 2 * H + j), cand = _mm512_loadu_ps(g + 3 * H + j);
            __m512 tc = _mm512_loadu_ps(tc_row + j), gh = _mm512_loadu_ps(grad_h.data() + b * H + j);
            __m512 cell = _mm512_fmadd_ps(_mm512_mul_ps(gh, o), _mm512_fnmadd_ps(tc, tc, one),
                                          _mm512_loadu_ps(grad_c.data() + b * H + j));
            __m512 pc = pc_row ? _mm512_loadu_ps(pc_row + j) : _mm512_setzero_ps();
            __m512 gi = _mm512_mul_ps(_mm512_mul_ps(cell, cand), _mm512_mul_ps(i, _mm512_sub_ps(one, i)));
            __m512 gf = _mm512_mul_ps(_mm512_mul_ps(cell, pc), _mm512_mul_ps(f, _mm512_sub_ps(one, f)));
            __m512 go = _mm512_mul_ps(_mm512_mul_ps(gh, tc), _mm512_mul_ps(o, _mm512_sub_ps(one, o)));
            __m512 gg = _mm512_mul_ps(_mm512_mul_ps(cell, i), _mm512_fnmadd_ps(cand, cand, one));
            _mm512_storeu_ps(grad_c.data() + b * H + j, _mm512_mul_ps(cell, f));
            const __m512 parts[4] = {gi, gf, go, gg};
            for (int k = 0; k < 4; ++k) {
              store_bf16(out + k * H + j, parts[k]);
              _mm512_storeu_ps(gb + k * H + j, _mm512_add_ps(_mm512_loadu_ps(gb + k * H + j), parts[k]));
            }
          }
        }
        // the step's gradients, transposed into their columns of the output
        fbgemm::transpose_simd<uint16_t>(B, G, reinterpret_cast<const uint16_t*>(tile.data()), G,
                                         reinterpret_cast<uint16_t*>(columns.data() + t * B), T * B);
        if (!first_step) {
          at::native::cpublas::brgemm(B, H, G, G, H, H, false, tile.data(), packed.data(), grad_h.data());
        }
      }
      // written from the cache in one sequential pass: scattered 128-byte writes straight to memory cost 2x more
      std::copy(columns.begin(), columns.end(), grads_p + m * G * T * B);
    }
    at::native::cpublas::brgemm_release();
  });
  return grad_bias;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("forward", &forward, "LSTM forward over all steps (see lstm_kernels.cpp)");
  module.def("backward", &backward, "LSTM backward over all steps (see lstm_kernels.cpp)");
}
