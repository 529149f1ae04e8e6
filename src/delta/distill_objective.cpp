#include "delta/distill_objective.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/parallel.h"
#include "kernels/sign_matmul.h"

namespace bd {

const char* distill_loss_name(DistillLoss loss) {
  return loss == DistillLoss::KL ? "kl" : "logit_mse";
}

// Turns each compressed linear's (X, dY) into its scales' gradient: ∂L/∂γ[o] = Σ_r dY[r, o] ·
// (S·X)[r, o], since the overlay adds γ[o]·(S·x)[o] to output o (one γ for all o per matrix).
class DistillObjective::ScaleObserver : public LinearBackwardObserver {
 public:
  struct Target {
    const uint8_t* bits;
    bool per_row;
    int64_t offset;  // of this matrix's first scale in the gradient
  };
  std::map<std::string, Target> targets;
  float* grad = nullptr;  // where on_linear adds; null: observe nothing

  void on_linear(const std::string& weight_name, const float* X, const float* dY, int64_t rows,
                 int64_t in, int64_t out) override {
    auto it = targets.find(weight_name);
    if (!grad || it == targets.end()) return;
    const Target& target = it->second;
    projected_.resize(size_t(rows * out));
    sign_project(projected_.data(), X, target.bits, rows, out, in);  // [rows, out]
    sums_.assign(size_t(out), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const float* dy = dY + r * out;
      const float* sx = projected_.data() + r * out;
      for (int64_t o = 0; o < out; ++o) sums_[size_t(o)] += double(dy[o]) * sx[o];
    }
    if (target.per_row) {
      for (int64_t o = 0; o < out; ++o) grad[target.offset + o] += float(sums_[size_t(o)]);
    } else {
      double total = 0;
      for (double s : sums_) total += s;
      grad[target.offset] += float(total);
    }
  }

 private:
  std::vector<float> projected_;
  std::vector<double> sums_;
};

DistillObjective::DistillObjective(const LlamaWeights& teacher, const LlamaWeights& student,
                                   const LlamaDelta& student_delta,
                                   const std::vector<AdapterMatrix>& matrices, DistillLoss loss)
    : teacher_(teacher),
      student_(student),
      student_delta_(student_delta),
      loss_(loss),
      observer_(std::make_unique<ScaleObserver>()) {
  if (teacher.config.vocab_size != student.config.vocab_size)
    fail("distillation: the fine-tune's vocabulary (", teacher.config.vocab_size,
         ") differs from the base's (", student.config.vocab_size, ")");
  for (const AdapterMatrix& m : matrices) {
    const bool per_row = m.per_row();
    if (!observer_->targets
             .emplace(m.name, ScaleObserver::Target{m.sign.as<uint8_t>(), per_row, scale_count_})
             .second)
      fail("distillation: matrix ", quote_bytes(m.name), " appears twice");
    scale_count_ += per_row ? m.out : 1;
  }
}

DistillObjective::~DistillObjective() = default;

double DistillObjective::forward(const int32_t* tokens, int64_t B, int64_t T) {
  if (!acts_ || acts_->B != B || acts_->T != T) {
    acts_ = std::make_unique<TrainActivations>(student_.config, B, T);
    no_targets_.assign(size_t(B * T), -1);
  }
  const int64_t rows = B * T, V = student_.config.vocab_size;
  teacher_out_.resize(size_t(rows * V));
  float* logits = acts_->logits;

  forward_train(teacher_, tokens, no_targets_.data(), B, T, *acts_);
  if (loss_ == DistillLoss::KL) {  // keep log p_teacher
#pragma omp parallel for if (rows * V >= kMinParallelWork)
    for (int64_t r = 0; r < rows; ++r) {
      const float* z = logits + r * V;
      const float peak = *std::max_element(z, z + V);
      double sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(double(z[v] - peak));
      const float lse = peak + float(std::log(sum));
      float* log_p = teacher_out_.data() + r * V;
      for (int64_t v = 0; v < V; ++v) log_p[v] = z[v] - lse;
    }
  } else {
    std::copy_n(logits, rows * V, teacher_out_.data());
  }

  forward_train(student_, tokens, no_targets_.data(), B, T, *acts_, &student_delta_);
  // loss and, in place of the student's logits, dL/dlogits.
  double total = 0;
  if (loss_ == DistillLoss::KL) {
    // KL_r = Σ_v p_t (log p_t − log p_s); ∂KL_r/∂z_s = p_s − p_t; the loss is the mean over rows.
    const float scale = 1.0f / float(rows);
#pragma omp parallel for reduction(+ : total) if (rows * V >= kMinParallelWork)
    for (int64_t r = 0; r < rows; ++r) {
      float* z = logits + r * V;
      const float* log_pt = teacher_out_.data() + r * V;
      const float peak = *std::max_element(z, z + V);
      double sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(double(z[v] - peak));
      const float lse = peak + float(std::log(sum));
      double kl = 0;
      for (int64_t v = 0; v < V; ++v) {
        const float log_ps = z[v] - lse, pt = std::exp(log_pt[v]);
        kl += double(pt) * (double(log_pt[v]) - log_ps);
        z[v] = (std::exp(log_ps) - pt) * scale;
      }
      total += kl;
    }
    return total / double(rows);
  }
  // (1 / (rows·V)) Σ (z_s − z_t)², gradient 2 (z_s − z_t) / (rows·V).
  const double count = double(rows * V);
  const float scale = float(2.0 / count);
#pragma omp parallel for reduction(+ : total) if (rows * V >= kMinParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    float* z = logits + r * V;
    const float* zt = teacher_out_.data() + r * V;
    for (int64_t v = 0; v < V; ++v) {
      const float diff = z[v] - zt[v];
      total += double(diff) * diff;
      z[v] = diff * scale;
    }
  }
  return total / count;
}

double DistillObjective::loss(const int32_t* tokens, int64_t B, int64_t T) {
  return forward(tokens, B, T);
}

double DistillObjective::loss_and_gradient(const int32_t* tokens, int64_t B, int64_t T,
                                           float* grad) {
  const double value = forward(tokens, B, T);
  observer_->grad = grad;
  backward_from_logits(student_, *acts_, nullptr, observer_.get(), &student_delta_);
  observer_->grad = nullptr;
  return value;
}

}  // namespace bd
