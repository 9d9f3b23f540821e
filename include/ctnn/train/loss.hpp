// CrossEntropyLoss: mean over the batch of -log_softmax(logits)[label], as torch.nn.CrossEntropyLoss.
#pragma once

#include <cmath>
#include <span>
#include <stdexcept>
#include <string>

#include "ctnn/core/tensor.hpp"

namespace ctnn {

template <int Classes>
class CrossEntropyLoss {
 public:
  using Logits = Batch<Features<Classes>>;

  // Returns the loss and keeps d(loss)/d(logits) for grad(). Labels must be in [0, Classes).
  // `mean_over` (data-parallel training, ctnn/dist/): the size of the global batch these n
  // samples are a share of; the loss and its gradient are then this share's part of the global
  // mean (its sum over the batch divided by mean_over), and the shares' parts add up to it.
  float forward(const Logits& logits, std::span<const int> labels, int mean_over = 0) {
    const int n = logits.batch();
    if (static_cast<int>(labels.size()) != n)
      throw std::invalid_argument("CrossEntropyLoss: " + std::to_string(labels.size()) + " labels for a batch of " +
                                  std::to_string(n));
    if (n == 0) throw std::invalid_argument("CrossEntropyLoss: empty batch");
    if (mean_over != 0 && mean_over < n)
      throw std::invalid_argument("CrossEntropyLoss: a share of " + std::to_string(n) +
                                  " samples of a global batch of " + std::to_string(mean_over));
    const int denominator = mean_over ? mean_over : n;
    for (int i = 0; i < n; ++i)
      if (labels[i] < 0 || labels[i] >= Classes)
        throw std::invalid_argument("CrossEntropyLoss: label " + std::to_string(labels[i]) + " of sample " +
                                    std::to_string(i) + " is outside [0, " + std::to_string(Classes) + ")");
    grad_.resize(n);
    float total = 0.0f;
    const float inv_n = 1.0f / static_cast<float>(denominator);
    for (int i = 0; i < n; ++i) {
      // Stable log-softmax: shift by the maximum before exponentiating.
      float mx = logits(i, 0, 0, 0);
      for (int k = 1; k < Classes; ++k) mx = std::max(mx, logits(i, k, 0, 0));
      float sum = 0.0f;
      for (int k = 0; k < Classes; ++k) sum += std::exp(logits(i, k, 0, 0) - mx);
      const float log_sum = std::log(sum);
      for (int k = 0; k < Classes; ++k) {
        const float log_p = logits(i, k, 0, 0) - mx - log_sum;
        if (k == labels[i]) total += -log_p;
        // d/dlogit of the mean NLL: (softmax - onehot) / N
        grad_(i, k, 0, 0) = std::exp(log_p) * inv_n - (k == labels[i] ? inv_n : 0.0f);
      }
    }
    return total / static_cast<float>(denominator);
  }

  const Logits& grad() const { return grad_; }

 private:
  Logits grad_;
};

// Index of the largest logit of each sample (the predicted class), as torch.max(outputs, 1)
// picks it: the first of a tie, and a NaN counts as larger than any number (the first NaN wins),
// so a diverged network's prediction is the class PyTorch would report.
template <int Classes>
inline int argmax(const Batch<Features<Classes>>& logits, int sample) {
  int best = 0;
  for (int k = 1; k < Classes; ++k) {
    const float v = logits(sample, k, 0, 0), b = logits(sample, best, 0, 0);
    if (std::isnan(b)) break;
    if (v > b || std::isnan(v)) best = k;
  }
  return best;
}

}  // namespace ctnn
