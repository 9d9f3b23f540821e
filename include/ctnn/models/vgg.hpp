// The assignment's VGG16 (vgg16_full.py): make_layers(cfg) + the dropout/BatchNorm1d classifier.
#pragma once

#include <cmath>
#include <tuple>

#include "ctnn/compose/network.hpp"
#include "ctnn/layers/batchnorm.hpp"
#include "ctnn/layers/conv2d.hpp"
#include "ctnn/layers/dropout.hpp"
#include "ctnn/layers/flatten.hpp"
#include "ctnn/layers/linear.hpp"
#include "ctnn/layers/pooling.hpp"
#include "ctnn/layers/relu.hpp"

// The model's building blocks live in ctnn::vgg, so that short names such as M do not reach
// every user of namespace ctnn; the models themselves (VGG16, VGG<BatchNorm>) are in ctnn.
namespace ctnn::vgg {

// The max-pooling marker of a VGG configuration ('M' in PyTorch's cfg lists).
inline constexpr int M = 0;

namespace detail {
template <class... Ts>
using cat_t = decltype(std::tuple_cat(std::declval<Ts>()...));

template <class Tuple>
struct SequentialOf;
template <class... Ls>
struct SequentialOf<std::tuple<Ls...>> {
  using type = Sequential<Ls...>;
};

// make_layers: walks the configuration, each number v giving Conv2d(in, v, 3, padding 1) then
// (BatchNorm2d(v) if BatchNorm) ReLU, each M a MaxPool2d(2, 2).
template <int InC, bool BatchNorm, int... Cfg>
struct MakeLayers {
  using type = std::tuple<>;
};
template <int InC, bool BatchNorm, int V, int... Rest>
struct MakeLayers<InC, BatchNorm, V, Rest...> {
  using here = std::conditional_t<V == M, std::tuple<MaxPool2d<2, 2>>,
                                  std::conditional_t<BatchNorm,
                                                     std::tuple<Conv2d<InC, V, 3, 1, 1>, BatchNorm2d<V>, ReLU>,
                                                     std::tuple<Conv2d<InC, V, 3, 1, 1>, ReLU>>>;
  using type = cat_t<here, typename MakeLayers<(V == M ? InC : V), BatchNorm, Rest...>::type>;
};
}  // namespace detail

// make_layers(cfg, batch_norm) as a Sequential spec; M marks a max pooling.
template <bool BatchNorm, int... Cfg>
using MakeLayers = typename detail::SequentialOf<typename detail::MakeLayers<3, BatchNorm, Cfg...>::type>::type;

// The assignment's configuration, as written in its report: 12 convolutions (its fourth
// stage has two, not the textbook three).
template <bool BatchNorm = false>
using VGG16Features = MakeLayers<BatchNorm, 64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, M, 512, 512, 512, M>;

using VGG16Classifier = Sequential<Dropout<>, Linear<512, 512>, BatchNorm1d<512>, ReLU, Dropout<>,
                                   Linear<512, 10>>;

template <class Features>
using VGGRoot = Sequential<Named<"features", Features>, Flatten, Named<"classifier", VGG16Classifier>>;

}  // namespace ctnn::vgg

namespace ctnn {

// The assignment's VGG constructor: every Conv2d weight ~ Normal(0, sqrt(2 / (k*k*out))) and its
// bias 0; Linear and BatchNorm1d keep PyTorch's defaults.
struct VGGInit {
  template <class Net>
  static void apply(Net& net, std::uint64_t seed) {
    Rng rng = Rng::stream(seed, 0x766767);
    for_each_leaf(net, [&](Leaf& layer, const std::string&) {
      if (layer.init_role() != InitRole::convolution) return;
      const Leaf::Affine a = layer.affine();
      const double stddev = std::sqrt(2.0 / (a.kernel * a.kernel * a.out));
      for (auto& w : a.weight->data()) w = static_cast<float>(rng.normal(0.0, stddev));
      for (auto& b : a.bias->data()) b = 0.0f;
    });
  }
};

// VGG(make_layers(cfg, BatchNorm)) for 3x32x32 inputs.
template <bool BatchNorm = false>
using VGG = Network<Shape<3, 32, 32>, vgg::VGGRoot<vgg::VGG16Features<BatchNorm>>, VGGInit>;

// The assignment's vgg16(): make_layers(cfg) without batch norm.
using VGG16 = VGG<false>;

}  // namespace ctnn
