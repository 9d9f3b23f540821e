// AnyNetwork<In, Out>: a network seen through virtual functions, known only by the shapes of
// its input and output samples; AnyNetworkOf<Net> is one made from a Network.
//
// The code that drives a network (Trainer, evaluate, checkpoints, snapshots, the NaN diagnosis)
// needs none of its layer types. Instantiated for Network<...> it is compiled again for every
// network; instantiated for AnyNetwork<In, Out> it is compiled once per pair of shapes, in a
// file that need not see the layers: ctnn-train compiles its trainer beside main() and each
// network in a file of its own (examples/cifar_<model>.cpp), so no translation unit holds
// both. The price is one indirect call per forward, backward, gradient reset and walk.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ctnn/compose/network.hpp"
#include "ctnn/layers/leaf.hpp"

namespace ctnn {

template <class In, class Out>
class AnyNetwork {
 public:
  using in_shape = In;
  using out_shape = Out;
  using Input = Batch<In>;
  using Output = Batch<Out>;

  virtual ~AnyNetwork() = default;

  // As Network's functions of the same names.
  virtual const Output& forward(const Input& x) = 0;
  virtual void backward(const Input& x, const Output& dy) = 0;
  virtual void backward(const Input& x, const Output& dy, Input& dx) = 0;
  virtual void train(bool on = true) = 0;
  void eval() { train(false); }
  virtual bool is_training() const = 0;
  virtual void zero_grad() = 0;
  virtual std::span<float> parameters() = 0;
  virtual std::span<float> gradients() = 0;
  virtual const std::vector<StateEntry>& state_entries() const = 0;
  virtual void visit_state(StateVisitor& v) = 0;
  virtual void reset_parameters(std::uint64_t seed) = 0;
  virtual void summary(std::ostream& os) = 0;
  // The leaves only (for_each_leaf, layers/leaf.hpp): a walk that wants the layers' types needs
  // the Network itself.
  virtual void for_each_layer(detail::LeafWalk walk, const std::string& prefix) = 0;

  std::size_t num_parameters() { return parameters().size(); }
};

template <class Net>
class AnyNetworkOf final : public AnyNetwork<typename Net::in_shape, typename Net::out_shape> {
  using Base = AnyNetwork<typename Net::in_shape, typename Net::out_shape>;
  using typename Base::Input;
  using typename Base::Output;

 public:
  // Net's constructor arguments (the seed).
  template <class... A>
  explicit AnyNetworkOf(A&&... args) : net_(std::forward<A>(args)...) {}

  Net& network() { return net_; }

  const Output& forward(const Input& x) override { return net_.forward(x); }
  void backward(const Input& x, const Output& dy) override { net_.backward(x, dy); }
  void backward(const Input& x, const Output& dy, Input& dx) override { net_.backward(x, dy, dx); }
  void train(bool on = true) override { net_.train(on); }  // (a default is the static type's)
  bool is_training() const override { return net_.is_training(); }
  void zero_grad() override { net_.zero_grad(); }
  std::span<float> parameters() override { return net_.parameters(); }
  std::span<float> gradients() override { return net_.gradients(); }
  const std::vector<StateEntry>& state_entries() const override { return net_.state_entries(); }
  void visit_state(StateVisitor& v) override { net_.visit_state(v); }
  void reset_parameters(std::uint64_t seed) override { net_.reset_parameters(seed); }
  void summary(std::ostream& os) override { net_.summary(os); }
  void for_each_layer(detail::LeafWalk walk, const std::string& prefix) override {
    net_.for_each_layer(walk, prefix);
  }

 private:
  Net net_;
};

}  // namespace ctnn
