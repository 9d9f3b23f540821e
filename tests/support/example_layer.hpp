// A new layer, PyTorch's SiLU: y = x * sigmoid(x), no parameters.
#pragma once
#include <cmath>
#include <ctnn/ctnn.hpp>

template <class In>  // the concrete layer, for input sample shape In
class SiLULayer : public ctnn::LeafLayer<SiLULayer<In>, In, In> {
 public:
  static std::string type_name() { return "SiLU()"; }
  const ctnn::Batch<In>& forward(const ctnn::Batch<In>& x) {
    this->y_.resize(x.batch());
    for (std::size_t i = 0; i < x.size(); ++i) this->y_.data()[i] = x.data()[i] / (1.0f + std::exp(-x.data()[i]));
    return this->y_;
  }
  void backward(const ctnn::Batch<In>& x, const ctnn::Batch<In>& dy, ctnn::Batch<In>* dx) {
    if (!dx) return;  // the first layer of a network needs no input gradient
    dx->resize(x.batch());
    for (std::size_t i = 0; i < x.size(); ++i) {
      const float s = 1.0f / (1.0f + std::exp(-x.data()[i]));
      dx->data()[i] = dy.data()[i] * s * (1.0f + x.data()[i] * (1.0f - s));
    }
  }
};

struct SiLU {  // the spec users write: Sequential<Linear<8, 8>, SiLU, ...>
  template <class In>
  using bind = SiLULayer<In>;
};
static_assert(ctnn::Layer<SiLULayer<ctnn::Features<8>>>);
