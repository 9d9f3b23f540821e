// A layer without backward() must be rejected where it is composed, with the concept's sentence,
// not with an error from deep inside Sequential's backward pass.
// expect: Sequential: an element is not a layer spec
#include <ctnn/ctnn.hpp>

template <class In>
class Halve : public ctnn::LeafLayer<Halve<In>, In, In> {
 public:
  static std::string type_name() { return "Halve()"; }
  const ctnn::Batch<In>& forward(const ctnn::Batch<In>& x) {
    this->y_ = x;
    for (std::size_t i = 0; i < x.size(); ++i) this->y_.data()[i] *= 0.5f;
    return this->y_;
  }
#ifdef CTNN_CONTROL
  void backward(const ctnn::Batch<In>&, const ctnn::Batch<In>& dy, ctnn::Batch<In>* dx) {
    if (!dx) return;
    *dx = dy;
    for (std::size_t i = 0; i < dx->size(); ++i) dx->data()[i] *= 0.5f;
  }
#endif
};
struct HalveSpec {
  template <class In>
  using bind = Halve<In>;
};

int main() {
  ctnn::Network<ctnn::Features<4>, ctnn::Sequential<ctnn::Linear<4, 4>, HalveSpec>> net;
  return static_cast<int>(net.num_parameters() == 0);
}
