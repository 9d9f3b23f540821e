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
#pragma once

#include <string>

#include "ctnn/core/random.hpp"
#include "ctnn/core/state.hpp"
#include "ctnn/core/tensor.hpp"

namespace ctnn {

// Base for leaf layers (CRTP): owns the output buffer and the training flag, and provides
// the parts of the contract that a layer without parameters does not need to write.
template <class Derived, class In, class Out>
class LeafLayer {
 public:
  using in_shape = In;
  using out_shape = Out;

  const Batch<Out>& output() const { return y_; }
  void release_output() { y_.release(); }
  void set_training(bool on) { training_ = on; }
  bool is_training() const { return training_; }
  void visit_state(StateVisitor&, const std::string&) {}
  void reset_parameters(Rng&) {}
  template <class F>
  void for_each_layer(F&& f, const std::string& prefix) {
    f(static_cast<Derived&>(*this), prefix);
  }

 protected:
  Batch<Out> y_;
  bool training_ = true;
};

}  // namespace ctnn
