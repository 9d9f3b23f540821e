// Sequential<L...> and Named<"key", L>: flat composition with the shape threaded through types.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include "ctnn/compose/grad_stack.hpp"
#include "ctnn/core/grad_mode.hpp"
#include "ctnn/layers/layer.hpp"

namespace ctnn {

// A string usable as a template argument (C++20), for module names.
template <std::size_t N>
struct FixedString {
  char text[N]{};
  constexpr FixedString(const char (&s)[N]) { std::copy_n(s, N, text); }
  constexpr std::string_view view() const { return {text, N - 1}; }
};

// Gives a child its PyTorch attribute name ("features", "layer", "downsize", ...) instead of its
// index in the enclosing Sequential, so state_dict keys match the PyTorch module tree.
template <FixedString Name, class Spec>
struct Named {
  // As PyTorch's add_module: an empty name would drop a level of the keys and a dotted one could
  // equal another child's nested key; either way two tensors would share a state_dict key.
  static_assert(!Name.view().empty(), "Named: a module name must not be empty");
  static_assert(Name.view().find('.') == std::string_view::npos, "Named: a module name must not contain '.'");
  template <class In>
  struct bind : Spec::template bind<In> {
    static constexpr std::string_view module_name = Name.view();
  };
};

namespace detail {
template <class In, class... Specs>
struct BindChain {
  using layers = std::tuple<>;
  using out = In;
};
// First is not a layer spec for In: the chain ends here, so that the compiler reports this one
// error instead of going on to bind First and every element after it.
template <bool IsSpec, class In, class First, class... Rest>
struct BindStep {
  static_assert(IsSpec,
                "Sequential: an element is not a layer spec (a `template <class In> using bind` giving a ctnn::Layer, "
                "see layers/layer.hpp)");
  using layers = std::tuple<>;
  using out = In;
};
template <class In, class First, class... Rest>
struct BindStep<true, In, First, Rest...> {
  using first = typename First::template bind<In>;
  using next = BindChain<typename first::out_shape, Rest...>;
  using layers = decltype(std::tuple_cat(std::declval<std::tuple<first>>(),
                                         std::declval<typename next::layers>()));
  using out = typename next::out;
};
template <class In, class First, class... Rest>
struct BindChain<In, First, Rest...> : BindStep<LayerSpecFor<First, In>, In, First, Rest...> {};

// A layer that can apply a following ReLU in its own forward pass (forward_relu: Conv2d,
// BatchNorm), followed by a layer that can take such an output as its own (adopt: ReLU).
template <class A, class B>
concept ReLUFusedPair = requires(A& a, B& b, const Batch<typename A::in_shape>& x,
                                 const Batch<typename B::in_shape>& y) {
  a.forward_relu(x);
  b.adopt(y);
};

// A layer that can apply, in its own forward, the per-channel map of a BatchNorm after it
// (forward_folded: Conv2d), followed by one that gives that map in evaluation and takes the
// result as its own output (eval_map, adopt_folded: BatchNorm).
template <class A, class B>
concept BatchNormFoldedPair = requires(A& a, B& b, const Batch<typename A::in_shape>& x,
                                       const Batch<typename B::in_shape>& y) {
  a.forward_folded(x, b.eval_map(), true);
  b.adopt_folded(y);
  b.is_training();
};

// A Sequential child's name: the Named one's, else empty (its key is then its index).
template <class Spec>
inline constexpr std::string_view spec_name{};
template <FixedString Name, class Spec>
inline constexpr std::string_view spec_name<Named<Name, Spec>> = Name.view();

// Whether `key` is the decimal index i, an unnamed child's key.
constexpr bool is_index_key(std::string_view key, std::size_t i) {
  if (key.empty() || (key.size() > 1 && key[0] == '0')) return false;
  std::size_t v = 0;
  for (char c : key) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<std::size_t>(c - '0');
  }
  return v == i;
}

// The first two children (i < j) whose state_dict keys coincide, or {0, 0}: two Named ones of one
// name, or a Named one called by another's index. Their entries would overwrite each other in a
// checkpoint.
template <class... Specs>
constexpr std::pair<std::size_t, std::size_t> clashing_children() {
  const std::string_view names[] = {spec_name<Specs>...};
  for (std::size_t j = 0; j < sizeof...(Specs); ++j)
    for (std::size_t i = 0; i < j; ++i) {
      const std::string_view a = names[i], b = names[j];
      if (a.empty() ? is_index_key(b, i) : b.empty() ? is_index_key(a, j) : a == b) return {i, j};
    }
  return {0, 0};
}
// Instantiated to fail with the two children's positions in the error (true for {0, 0}).
template <std::size_t First, std::size_t Second>
struct child_keys_differ {
  static constexpr bool value = First == Second;
};

template <class T>
std::string child_key(std::size_t index) {
  if constexpr (requires { T::module_name; }) return std::string(T::module_name);
  else return std::to_string(index);
}
}  // namespace detail

template <class In, class... Specs>
class SequentialLayer {
  using chain = detail::BindChain<In, Specs...>;
  using Layers = typename chain::layers;
  static constexpr std::size_t count = sizeof...(Specs);

 public:
  using in_shape = In;
  using out_shape = typename chain::out;

  static std::string type_name() { return "Sequential"; }

  template <std::size_t I>
  auto& get() { return std::get<I>(layers_); }
  template <std::size_t I>
  const auto& get() const { return std::get<I>(layers_); }

  const Batch<out_shape>& forward(const Batch<In>& x) { return forward_from<0>(x); }
  const Batch<out_shape>& output() const { return std::get<count - 1>(layers_).output(); }
  void release_output() { release_at<count - 1>(); }

  void backward(const Batch<In>& x, const Batch<out_shape>& dy, Batch<In>* dx) {
    detail::GradFrame frame(2);
    backward_at<count - 1>(x, dy, dx, frame);
  }

  void set_training(bool on) {
    std::apply([on](auto&... l) { (l.set_training(on), ...); }, layers_);
  }
  [[gnu::cold]] void visit_state(StateVisitor& v, const std::string& prefix) {
    each([&](auto& l, std::size_t i) {
      l.visit_state(v, join_key(prefix, detail::child_key<std::decay_t<decltype(l)>>(i)));
    });
  }
  [[gnu::cold]] void reset_parameters(Rng& rng) {
    std::apply([&rng](auto&... l) { (l.reset_parameters(rng), ...); }, layers_);
  }
  template <class F>
  [[gnu::cold]] void for_each_layer(F&& f, const std::string& prefix) {
    each([&](auto& l, std::size_t i) {
      l.for_each_layer(f, join_key(prefix, detail::child_key<std::decay_t<decltype(l)>>(i)));
    });
  }

 private:
  template <class F>
  void each(F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) { (f(std::get<I>(layers_), I), ...); }
    (std::make_index_sequence<count>{});
  }

  // Whether layer I is a ReLU that layer I - 1 applies in its own forward (forward_relu), its
  // output then a view of layer I - 1's, as after torch's ReLU(inplace=True): a pass over the
  // output fewer (VGG16's twelve convolutions, ResNet's BatchNorm2d layers). The backward is
  // unchanged: ReLU masks the gradient with that output.
  template <std::size_t I>
  static constexpr bool adopted_at() {
    if constexpr (I == 0 || I >= count) return false;
    else return detail::ReLUFusedPair<std::tuple_element_t<I - 1, Layers>, std::tuple_element_t<I, Layers>>;
  }

  // Whether layer I + 1 is a BatchNorm that layer I may apply in its own forward (a Conv2d
  // followed by BatchNorm): done in evaluation under NoGrad, where BatchNorm is a per-channel
  // affine map, so the convolution's epilogue applies the bias, that map and a ReLU after it
  // while its output is in registers or cache, and two layers' passes are saved (ResNet's
  // BatchNorm2d layers). The convolution's output then holds the BatchNorm's (and ReLU's) values.
  template <std::size_t I>
  static constexpr bool folds_at() {
    if constexpr (I >= count || I + 1 >= count) return false;  // also I = 0 - 1
    else return detail::BatchNormFoldedPair<std::tuple_element_t<I, Layers>, std::tuple_element_t<I + 1, Layers>>;
  }

  // Layer J's output storage back to the pool; an adopted ReLU's is layer J - 1's, a folded
  // BatchNorm's layer J - 1's (and releasing that again, where it was not folded, is harmless).
  template <std::size_t J>
  void release_at() {
    std::get<J>(layers_).release_output();
    if constexpr (adopted_at<J>()) release_at<J - 1>();
    else if constexpr (J > 0 && folds_at<J - 1>()) std::get<J - 1>(layers_).release_output();
  }

  // Under NoGrad nothing is kept for a backward pass: once layer I has read the output of layer
  // I - 1, that output's storage is released for the layers that follow (ping-pong), so the
  // forward holds a few outputs instead of all of them.
  template <std::size_t I, class X>
  const Batch<out_shape>& forward_from(const X& x) {
    auto& layer = std::get<I>(layers_);
    if constexpr (folds_at<I>()) {
      // Only under NoGrad: a BatchNorm's weight gradient reads the convolution's own output (a
      // backward in evaluation mode, e.g. with frozen statistics).
      auto& norm = std::get<I + 1>(layers_);
      if (!is_grad_enabled() && !norm.is_training()) {
        constexpr bool relu = adopted_at<I + 2>();
        const auto& z = norm.adopt_folded(layer.forward_folded(x, norm.eval_map(), relu));
        const auto& y = [&]() -> decltype(auto) {
          if constexpr (relu) return std::get<I + 2>(layers_).adopt(z);
          else return z;
        }();
        if constexpr (I > 0) release_at<I - 1>();
        constexpr std::size_t next = relu ? I + 3 : I + 2;
        if constexpr (next < count) return forward_from<next>(y);
        else return y;
      }
    }
    constexpr bool fused = adopted_at<I + 1>();
    const auto& y = [&]() -> decltype(auto) {
      if constexpr (fused) return std::get<I + 1>(layers_).adopt(layer.forward_relu(x));
      else return layer.forward(x);
    }();
    if constexpr (I > 0)
      if (!is_grad_enabled()) release_at<I - 1>();
    constexpr std::size_t next = fused ? I + 2 : I + 1;
    if constexpr (next < count) return forward_from<next>(y);
    else return y;
  }

  // Whether layer I is an adopted ReLU whose backward layer I - 1 does with its own
  // (backward_relu: BatchNorm): one pass over the gradient fewer (ResNet's BatchNorm2d layers).
  template <std::size_t I>
  static constexpr bool absorbed_at() {
    if constexpr (!adopted_at<I>()) return false;
    else return requires(std::tuple_element_t<I - 1, Layers>& l, const Batch<typename std::tuple_element_t<I - 1, Layers>::in_shape>& b) {
      l.backward_relu(b, b, nullptr);
    };
  }

  // Gradients of intermediate outputs live in the frame's two buffers, used alternately (layer
  // I writes the gradient of its input into buffer I % 2 while reading its output gradient from
  // the other; a layer that absorbs the ReLU after it writes into buffer (I - 1) % 2, where
  // that gradient may be: it reads each value before it overwrites it).
  template <std::size_t I, class DY>
  void backward_at(const Batch<In>& x, const DY& dy, Batch<In>* dx, detail::GradFrame& frame) {
    auto& layer = std::get<I>(layers_);
    if constexpr (absorbed_at<I>()) {
      auto& before = std::get<I - 1>(layers_);
      if constexpr (I - 1 == 0) {
        before.backward_relu(x, dy, dx);
      } else {
        using XS = typename std::tuple_element_t<I - 1, Layers>::in_shape;
        const int n = x.batch();
        auto g = Batch<XS>::view(frame.buffer((I - 1) % 2, static_cast<std::size_t>(n) * XS::size), n);
        before.backward_relu(std::get<I - 2>(layers_).output(), dy, &g);
        backward_at<I - 2>(x, g, dx, frame);
      }
    } else if constexpr (I == 0) {
      layer.backward(x, dy, dx);
    } else {
      using XS = typename std::tuple_element_t<I, Layers>::in_shape;
      const int n = x.batch();
      auto g = Batch<XS>::view(frame.buffer(I % 2, static_cast<std::size_t>(n) * XS::size), n);
      layer.backward(std::get<I - 1>(layers_).output(), dy, &g);
      backward_at<I - 1>(x, g, dx, frame);
    }
  }

  Layers layers_;
};

// Sequential<L...>: the layers applied in order; children are keyed 0, 1, 2, ... (or by Named).
template <class... Specs>
struct Sequential {
  static_assert(sizeof...(Specs) > 0, "Sequential: needs at least one layer");
  static constexpr auto clash = detail::clashing_children<Specs...>();
  static_assert(detail::child_keys_differ<clash.first, clash.second>::value,
                "Sequential: two children (positions in the error) have the same state_dict key, a Named name "
                "used twice or a Named name equal to another child's index: their tensors would overwrite each "
                "other in a checkpoint");
  template <class In>
  using bind = SequentialLayer<In, Specs...>;
};

}  // namespace ctnn
