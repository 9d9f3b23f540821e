// Leaf: a leaf layer seen at run time, without its type.
//
// for_each_layer (layers/layer.hpp) hands every leaf to its callable as its own type, so a
// generic lambda is compiled once for every layer type of the network: ResNet50_layer4 has some
// fifty. The library's own walks over a network (initialisation, NaN diagnosis, snapshots, the
// summary) want nothing a type gives them; they take a Leaf& through for_each_leaf instead, and
// are compiled once. Each layer type then costs one small LeafOf<L> (a few forwarding functions).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "ctnn/layers/layer.hpp"

namespace ctnn {

class Leaf {
 public:
  virtual std::string type_name() const = 0;
  virtual std::array<int, 3> output_shape() const = 0;  // per sample: channels, height, width
  virtual std::span<const float> output() const = 0;    // of the last forward
  virtual void visit_state(StateVisitor& v, const std::string& prefix) = 0;

  // A convolution's or linear layer's sizes and parameters, for a model's initialisation:
  // channels (or features) in and out, kernel size (1 for Linear).
  struct Affine {
    int in = 0, out = 0, kernel = 1;
    Param* weight = nullptr;
    Param* bias = nullptr;
  };
  virtual InitRole init_role() const = 0;
  virtual Affine affine() = 0;  // empty unless init_role() is convolution or linear

  // Random state that a resume restores (Dropout): absent unless has_random_state().
  virtual bool has_random_state() const = 0;
  virtual std::uint64_t seed() const = 0;
  virtual void set_seed(std::uint64_t seed) = 0;
  virtual std::uint64_t* draws() = 0;

 protected:
  ~Leaf() = default;
};

// The Leaf of a concrete leaf layer L (a reference: it lives for one call of the walk).
template <class L>
class LeafOf final : public Leaf {
  using traits = layer_traits<L>;

 public:
  explicit LeafOf(L& l) : l_(l) {}
  std::string type_name() const override { return L::type_name(); }
  std::array<int, 3> output_shape() const override {
    using S = typename L::out_shape;
    return {S::channels, S::height, S::width};
  }
  std::span<const float> output() const override { return {l_.output().data(), l_.output().size()}; }
  void visit_state(StateVisitor& v, const std::string& prefix) override { l_.visit_state(v, prefix); }
  InitRole init_role() const override { return traits::init_role; }
  Affine affine() override {
    if constexpr (traits::init_role == InitRole::convolution)
      return {L::in_channels, L::out_channels, L::kernel_size, &l_.weight, &l_.bias};
    else if constexpr (traits::init_role == InitRole::linear)
      return {L::in_features, L::out_features, 1, &l_.weight, &l_.bias};
    else return {};
  }
  bool has_random_state() const override { return traits::has_random_state; }
  std::uint64_t seed() const override {
    if constexpr (traits::has_random_state) return l_.seed();
    else return 0;
  }
  void set_seed(std::uint64_t seed) override {
    if constexpr (traits::has_random_state) l_.set_seed(seed);
    else (void)seed;
  }
  std::uint64_t* draws() override {
    if constexpr (traits::has_random_state) return &l_.draws;
    else return nullptr;
  }

 private:
  L& l_;
};

// A callable taking (Leaf&, const std::string& name), by reference and without its type, so
// that the walk below is compiled once per network whatever is done with the leaves.
class LeafCallback {
 public:
  template <class F>
  LeafCallback(F& f)  // NOLINT: implicit, as std::function_ref
      : object_(&f), call_([](void* o, Leaf& l, const std::string& n) { (*static_cast<F*>(o))(l, n); }) {}
  void operator()(Leaf& l, const std::string& name) const { call_(object_, l, name); }

 private:
  void* object_;
  void (*call_)(void*, Leaf&, const std::string&);
};

namespace detail {
struct LeafWalk {
  LeafCallback f;
  template <class L>
  void operator()(L& layer, const std::string& name) const {
    LeafOf<L> leaf(layer);
    f(leaf, name);
  }
};
}  // namespace detail

// Calls f(leaf, name) for every leaf layer of `layer` (any Layer, composite or not), in module
// order, with name its state_dict prefix below `prefix`.
template <class L, class F>
void for_each_leaf(L& layer, F&& f, const std::string& prefix = "") {
  layer.for_each_layer(detail::LeafWalk{LeafCallback(f)}, prefix);
}

}  // namespace ctnn
