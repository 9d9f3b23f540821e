// The contract every layer fulfils, and a base for the layers that need little of it.
//
// A layer *spec* is a small type the user writes (Conv2d<3, 64, 3, 1, 1>, ReLU, ...). It has
//   template <class In> using bind = <the concrete layer for input shape In>;
// so that Sequential can thread the sample shape through a stack at compile time.
//
// A concrete layer T has:
//   using in_shape, out_shape;                    compile-time sample shapes
//   static std::string type_name();               PyTorch-style description
//   const Batch<out_shape>& forward(const Batch<in_shape>& x);
//        computes the output into a buffer the layer owns (valid until the next forward)
//        and keeps what backward needs;
//   void backward(const Batch<in_shape>& x, const Batch<out_shape>& dy, Batch<in_shape>* dx);
//        x is the input of the last forward, dy the loss gradient of the output; adds the
//        parameter gradients into the gradient buffer (PyTorch accumulates, zero_grad clears)
//        and overwrites *dx with the input gradient unless dx is null (the first layer of a
//        network needs none, which saves a col2im);
//   const Batch<out_shape>& output() const;
//   void release_output();                        under NoGrad (core/grad_mode.hpp): the output
//        has been read and is not needed again; its storage goes back for other outputs
//   void set_training(bool);
//   void visit_state(StateVisitor& v, const std::string& prefix);    see core/state.hpp
//   void reset_parameters(Rng& rng);              PyTorch's default initialisation
//   template <class F> void for_each_layer(F&& f, const std::string& prefix);
//        calls f(leaf_layer, name) for every leaf, in module order.
// The concept `Layer` below states this; Sequential, Residual and Network check every layer
// they compose against it. Optional abilities are declared, never guessed from members:
//   static constexpr bool has_random_state = true;     random draws that a resume must restore:
//        void set_seed(std::uint64_t), std::uint64_t seed() const, std::uint64_t draws
//   static constexpr InitRole init_role = ...;         how a model's initialisation treats it
// and read through layer_traits<L>. tests/test_layers.cpp runs check_layer over every layer.
#pragma once

#include <concepts>
#include <cstdint>
#include <string>

#include "ctnn/core/random.hpp"
#include "ctnn/core/state.hpp"
#include "ctnn/core/tensor.hpp"

namespace ctnn {

namespace detail {
// Stands for any callable for_each_layer accepts.
struct AnyLeafVisitor {
  template <class T>
  void operator()(T&, const std::string&) const {}
};
}  // namespace detail

template <class L>
concept Layer = requires(L& l, const L& cl, const Batch<typename L::in_shape>& x,
                         const Batch<typename L::out_shape>& dy, Batch<typename L::in_shape>* dx, StateVisitor& v,
                         const std::string& prefix, Rng& rng) {
  { L::type_name() } -> std::convertible_to<std::string>;
  { l.forward(x) } -> std::same_as<const Batch<typename L::out_shape>&>;
  l.backward(x, dy, dx);
  { cl.output() } -> std::same_as<const Batch<typename L::out_shape>&>;
  l.release_output();
  l.set_training(true);
  l.visit_state(v, prefix);
  l.reset_parameters(rng);
  l.for_each_layer(detail::AnyLeafVisitor{}, prefix);
};

// A layer spec (what users write: Conv2d<3, 64, 3, 1, 1>, ReLU, ...) that binds to a Layer for
// input shape In.
template <class Spec, class In>
concept LayerSpecFor = requires { typename Spec::template bind<In>; } &&
                       Layer<typename Spec::template bind<In>> &&
                       std::same_as<typename Spec::template bind<In>::in_shape, In>;

// What a model's initialisation (models/vgg.hpp, models/resnet.hpp) does with a layer.
enum class InitRole { none, convolution, linear };

template <class L>
concept RandomStateLayer = requires(L& l, const L& cl) {
  l.set_seed(std::uint64_t{});
  { cl.seed() } -> std::same_as<std::uint64_t>;
  { l.draws } -> std::convertible_to<std::uint64_t>;
};

// The optional abilities of layer L, from its declarations (defaults: none).
template <class L>
struct layer_traits {
  static constexpr bool has_random_state = [] {
    if constexpr (requires { L::has_random_state; }) return L::has_random_state;
    else return false;
  }();
  static constexpr InitRole init_role = [] {
    if constexpr (requires { L::init_role; }) return L::init_role;
    else return InitRole::none;
  }();
  static_assert(!has_random_state || RandomStateLayer<L>,
                "a layer with has_random_state needs set_seed(std::uint64_t), seed() and draws");
};

// Base for leaf layers (CRTP): owns the output buffer and the training flag, and provides
// the parts of the contract that a layer without parameters does not need to write.
template <class Derived, class In, class Out>
class LeafLayer {
 public:
  using in_shape = In;
  using out_shape = Out;

  const Batch<Out>& output() const { return y_; }
  // Storage back to the pool; a view (adopt_output) is dropped, the storage being another's.
  void release_output() {
    if (y_.is_view()) y_ = Batch<Out>();
    else y_.release();
  }
  void set_training(bool on) { training_ = on; }
  bool is_training() const { return training_; }
  void visit_state(StateVisitor&, const std::string&) {}
  void reset_parameters(Rng&) {}
  template <class F>
  void for_each_layer(F&& f, const std::string& prefix) {
    f(static_cast<Derived&>(*this), prefix);
  }

 protected:
  // The output becomes a view of `computed`, another layer's output that already holds this
  // layer's values (a fusion: see ReLULayer::adopt), with no pass and no storage of its own.
  const Batch<Out>& adopt_output(const Batch<Out>& computed) {
    y_ = Batch<Out>::view(const_cast<float*>(computed.data()), computed.batch());
    return y_;
  }
  // Before computing into y_: own storage again if it was a view.
  Batch<Out>& own_output() {
    if (y_.is_view()) y_ = Batch<Out>();
    return y_;
  }

  Batch<Out> y_;
  bool training_ = true;
};

}  // namespace ctnn
