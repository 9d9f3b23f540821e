// Network<In, Root>: a complete model with its parameters in two contiguous buffers.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <iomanip>
#include <memory>
#include <new>
#include <ostream>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "ctnn/compose/sequential.hpp"
#include "ctnn/layers/leaf.hpp"
#include "ctnn/ops/elementwise.hpp"

namespace ctnn {

// One entry of a network's state, in PyTorch's state_dict order.
struct StateEntry {
  enum class Kind { parameter, buffer, counter };
  std::string name;
  TensorShape shape;
  Kind kind;
  std::size_t offset = 0;  // parameters: position in parameters() / gradients()
};

// Initialisation beyond every layer's PyTorch default: none.
struct DefaultInit {
  template <class Net>
  static void apply(Net&, std::uint64_t) {}
};

namespace detail {
// A zero-filled float array from calloc. For a block this large the C library maps fresh pages
// that the operating system zero-fills on first touch, so gradients that a network never
// computes (a network that only evaluates) never become resident: 59 MB for ResNet50_layer4.
class ZeroedFloats {
 public:
  void allocate(std::size_t n) {
    p_.reset(static_cast<float*>(std::calloc(n ? n : 1, sizeof(float))));
    if (!p_) throw std::bad_alloc();
    n_ = n;
  }
  float* data() const { return p_.get(); }
  std::size_t size() const { return n_; }
  operator std::span<float>() { return {p_.get(), n_}; }
  operator std::span<const float>() const { return {p_.get(), n_}; }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> p_;
  std::size_t n_ = 0;
};
}  // namespace detail

// A model built from a root spec (usually a Sequential) for input sample shape In.
//
// The constructor lays out every parameter in one value buffer and one gradient buffer (in
// state_dict order), then initialises them from `seed`: PyTorch's default for every layer, then
// `Init::apply(net, seed)` for a model's own scheme (as a PyTorch model's constructor
// re-initialises its modules). Optimizers take the two spans; checkpoint code walks
// visit_state() by name.
template <class In, class RootSpec, class Init = DefaultInit>
class Network {
 public:
  static_assert(LayerSpecFor<RootSpec, In>,
                "Network: the root is not a layer spec (a `template <class In> using bind` giving a ctnn::Layer, "
                "see layers/layer.hpp)");
  using Root = typename RootSpec::template bind<In>;
  using in_shape = In;
  using out_shape = typename Root::out_shape;
  using Input = Batch<In>;
  using Output = Batch<out_shape>;

  explicit Network(std::uint64_t seed = 0) {
    Layout layout;
    root_.visit_state(layout, "");
    entries_ = std::move(layout.entries);
    values_.assign(layout.total, 0.0f);
    grads_.allocate(layout.total);
    Bind bind{values_.data(), grads_.data()};
    root_.visit_state(bind, "");
    reset_parameters(seed);
  }
  Network(const Network&) = delete;  // layers hold pointers into this object's buffers
  Network& operator=(const Network&) = delete;

  // Initialises every parameter and gives every dropout layer a fresh seed, all from `seed`.
  void reset_parameters(std::uint64_t seed) {
    Rng rng(seed);
    root_.reset_parameters(rng);
    std::uint64_t index = 0;
    for_each_leaf(*this, [&](Leaf& layer, const std::string&) {
      if (layer.has_random_state()) layer.set_seed(mix64(seed ^ mix64(++index)));
    });
    Init::apply(*this, seed);
  }

  const Output& forward(const Input& x) {
    if constexpr (std::is_same_v<Input, Output>) {
      // The last output fed back in: the layer that writes the output would read and write one
      // buffer (a Linear's product in place summed overwritten values). It is copied aside first.
      if (x.size() > 0 && static_cast<const void*>(root_.output().data()) == static_cast<const void*>(x.data())) {
        fed_back_ = x;
        return forward(fed_back_);
      }
    }
    forward_kept_ = is_grad_enabled();
    // Under NoGrad the last pass's output (the caller's until now) goes back to the pool first,
    // for this pass's first layers: otherwise the logits kept whatever spare they took last
    // time (in VGG16, a 26 MB one) and the first layers allocated another (peak 166 -> 190 MiB).
    if (!forward_kept_ && static_cast<const void*>(root_.output().data()) != static_cast<const void*>(x.data()))
      root_.release_output();
    return root_.forward(x);
  }
  const Output& output() const { return root_.output(); }
  // Adds d(loss)/d(parameters) into gradients() for the last forward's input x.
  void backward(const Input& x, const Output& dy) {
    require_kept();
    root_.backward(x, dy, nullptr);
  }
  // The same, also giving the gradient with respect to the input.
  void backward(const Input& x, const Output& dy, Input& dx) {
    require_kept();
    root_.backward(x, dy, &dx);
  }

  void train(bool on = true) {
    training_ = on;
    root_.set_training(on);
  }
  void eval() { train(false); }
  bool is_training() const { return training_; }

  void zero_grad() { ops::fill(grads_.data(), 0.0f, grads_.size()); }
  std::span<float> parameters() { return values_; }
  std::span<const float> parameters() const { return values_; }
  std::span<float> gradients() { return grads_; }
  std::span<const float> gradients() const { return grads_; }
  std::size_t num_parameters() const { return values_.size(); }

  // Every parameter, buffer and counter, in PyTorch's state_dict order.
  const std::vector<StateEntry>& state_entries() const { return entries_; }
  void visit_state(StateVisitor& v) { root_.visit_state(v, ""); }
  template <class F>
  void for_each_layer(F&& f, const std::string& prefix = "") { root_.for_each_layer(f, prefix); }

  Root& root() { return root_; }

  // The layer table: name, type, output shape (per sample) and parameter count of every leaf.
  void summary(std::ostream& os) {
    os << std::left << std::setw(34) << "layer" << std::setw(56) << "type" << std::setw(16)
       << "output" << std::right << std::setw(12) << "params" << "\n";
    for_each_leaf(*this, [&](Leaf& layer, const std::string& name) {
      const auto s = layer.output_shape();
      Count count;
      layer.visit_state(count, "");
      std::ostringstream shape;
      shape << s[0] << "x" << s[1] << "x" << s[2];
      os << std::left << std::setw(34) << name << std::setw(56) << layer.type_name() << std::setw(16)
         << shape.str() << std::right << std::setw(12) << count.n << "\n";
    });
    os << "trainable parameters: " << num_parameters() << "\n";
  }

 private:
  struct Layout : StateVisitor {
    std::vector<StateEntry> entries;
    std::size_t total = 0;
    void parameter(const std::string& name, const TensorShape& shape, Param&) override {
      entries.push_back({name, shape, StateEntry::Kind::parameter, total});
      total += numel(shape);
    }
    void buffer(const std::string& name, const TensorShape& shape, std::span<float>) override {
      entries.push_back({name, shape, StateEntry::Kind::buffer});
    }
    void counter(const std::string& name, std::int64_t&) override {
      entries.push_back({name, {}, StateEntry::Kind::counter});
    }
  };
  struct Bind : StateVisitor {
    float* values;
    float* grads;
    Bind(float* v, float* g) : values(v), grads(g) {}
    void parameter(const std::string&, const TensorShape& shape, Param& p) override {
      p.value = values;
      p.grad = grads;
      p.numel = numel(shape);
      values += p.numel;
      grads += p.numel;
    }
  };
  struct Count : StateVisitor {
    std::size_t n = 0;
    void parameter(const std::string&, const TensorShape& shape, Param&) override { n += numel(shape); }
  };

  void require_kept() const {
    if (!forward_kept_)
      throw std::logic_error("Network::backward: the last forward ran under NoGrad, which keeps nothing for a "
                             "backward pass; run it outside the NoGrad scope");
  }

  Root root_;
  Input fed_back_;  // forward's copy of an input that was its last output
  bool forward_kept_ = true;
  AlignedFloats values_;
  detail::ZeroedFloats grads_;
  std::vector<StateEntry> entries_;
  bool training_ = true;
};

}  // namespace ctnn
