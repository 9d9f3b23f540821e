// Residual<Body, Shortcut>: body(x) + shortcut(x).
#pragma once

#include <string>

#include "ctnn/compose/sequential.hpp"
#include "ctnn/layers/identity.hpp"  // the default shortcut
#include "ctnn/ops/elementwise.hpp"

namespace ctnn {

template <class In, class BodySpec, class ShortcutSpec>
class ResidualLayer {
  static_assert(LayerSpecFor<BodySpec, In> && LayerSpecFor<ShortcutSpec, In>,
                "Residual: a branch is not a layer spec (a `template <class In> using bind` giving a ctnn::Layer, "
                "see layers/layer.hpp)");
  using BodyT = typename BodySpec::template bind<In>;
  using ShortT = typename ShortcutSpec::template bind<In>;
  using BOut = typename BodyT::out_shape;
  using SOut = typename ShortT::out_shape;
  static_assert(detail::sizes_agree<BOut::channels, SOut::channels>::value,
                "Residual: the body (first number) and the shortcut (second) give different channel counts");
  static_assert(detail::sizes_agree<BOut::height, SOut::height>::value,
                "Residual: the body (first number) and the shortcut (second) give different heights");
  static_assert(detail::sizes_agree<BOut::width, SOut::width>::value,
                "Residual: the body (first number) and the shortcut (second) give different widths");

 public:
  using in_shape = In;
  using out_shape = BOut;

  BodyT body;
  ShortT shortcut;

  static std::string type_name() { return "Residual"; }

  const Batch<out_shape>& forward(const Batch<In>& x) {
    const auto& a = body.forward(x);
    const auto& b = shortcut.forward(x);
    y_.resize(x.batch());
    ops::add(a.data(), b.data(), y_.data(), y_.size());
    if (!is_grad_enabled()) {  // NoGrad: the branches' outputs are not needed again
      body.release_output();
      shortcut.release_output();
    }
    return y_;
  }
  const Batch<out_shape>& output() const { return y_; }
  void release_output() { y_.release(); }

  void backward(const Batch<In>& x, const Batch<out_shape>& dy, Batch<In>* dx) {
    body.backward(x, dy, dx);
    if (!dx) {
      shortcut.backward(x, dy, nullptr);
      return;
    }
    detail::GradFrame frame(1);
    auto tmp = Batch<In>::view(frame.buffer(0, static_cast<std::size_t>(x.batch()) * In::size), x.batch());
    shortcut.backward(x, dy, &tmp);
    ops::add_into(dx->data(), tmp.data(), dx->size());
  }

  void set_training(bool on) {
    body.set_training(on);
    shortcut.set_training(on);
  }
  [[gnu::cold]] void visit_state(StateVisitor& v, const std::string& prefix) {
    body.visit_state(v, join_key(prefix, detail::child_key<BodyT>(0)));
    shortcut.visit_state(v, join_key(prefix, detail::child_key<ShortT>(1)));
  }
  [[gnu::cold]] void reset_parameters(Rng& rng) {
    body.reset_parameters(rng);
    shortcut.reset_parameters(rng);
  }
  template <class F>
  [[gnu::cold]] void for_each_layer(F&& f, const std::string& prefix) {
    body.for_each_layer(f, join_key(prefix, detail::child_key<BodyT>(0)));
    shortcut.for_each_layer(f, join_key(prefix, detail::child_key<ShortT>(1)));
  }

 private:
  Batch<out_shape> y_;
};

// Residual<Body, Shortcut>: the sum of two branches on the same input; no activation after
// the sum. Use Named<> to give the branches PyTorch attribute names.
template <class Body, class Shortcut = Identity>
struct Residual {
  static constexpr auto clash = detail::clashing_children<Body, Shortcut>();
  static_assert(detail::child_keys_differ<clash.first, clash.second>::value,
                "Residual: the body and the shortcut have the same state_dict key (one Named name for both, or "
                "a Named name equal to the other's index): their tensors would overwrite each other in a checkpoint");
  template <class In>
  using bind = ResidualLayer<In, Body, Shortcut>;
};

}  // namespace ctnn
