// check_layer: the layer contract of layers/layer.hpp, checked the same way for every layer type
// (as dlib's test_layer), so a new layer gets the whole check by adding one line to the list.
#include <array>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/check.hpp"
#include "support/example_layer.hpp"  // README's example of adding a layer

using namespace ctnn;
using namespace ctnn::test;

namespace {

// Holds dropout masks fixed between forwards (the gradient check runs the network many times).
template <class Net>
void reset_random_state(Net& net) {
  net.for_each_layer([](auto& layer, const std::string&) {
    if constexpr (layer_traits<std::decay_t<decltype(layer)>>::has_random_state) layer.draws = 0;
  });
}

// The run-time view of each leaf (layers/leaf.hpp, used by the library's own walks) says what
// its type says, and for_each_leaf visits the leaves for_each_layer visits, in the same order.
template <class Net>
void check_leaf_views(Net& net) {
  std::vector<std::string> typed, erased;
  net.for_each_layer([&](auto& layer, const std::string& name) {
    using T = std::decay_t<decltype(layer)>;
    using S = typename T::out_shape;
    using traits = layer_traits<T>;
    typed.push_back(name);
    LeafOf<T> leaf(layer);
    CHECK(leaf.type_name() == T::type_name());
    CHECK(leaf.output_shape() == std::array<int, 3>{S::channels, S::height, S::width});
    CHECK(leaf.output().data() == layer.output().data());
    CHECK(leaf.output().size() == layer.output().size());
    CHECK(leaf.init_role() == traits::init_role);
    const Leaf::Affine a = leaf.affine();
    if constexpr (traits::init_role == InitRole::convolution) {
      CHECK(a.in == T::in_channels);
      CHECK(a.out == T::out_channels);
      CHECK(a.kernel == T::kernel_size);
    } else if constexpr (traits::init_role == InitRole::linear) {
      CHECK(a.in == T::in_features);
      CHECK(a.out == T::out_features);
      CHECK(a.kernel == 1);
    }
    if constexpr (traits::init_role != InitRole::none) {
      CHECK(a.weight == &layer.weight);
      CHECK(a.bias == &layer.bias);
    } else {
      CHECK(a.weight == nullptr);
    }
    CHECK(leaf.has_random_state() == traits::has_random_state);
    if constexpr (traits::has_random_state) {
      CHECK(leaf.draws() == &layer.draws);
      leaf.set_seed(leaf.seed() + 1);
      CHECK(leaf.seed() == layer.seed());
    } else {
      CHECK(leaf.draws() == nullptr);
    }
  });
  for_each_leaf(net, [&](Leaf&, const std::string& name) { erased.push_back(name); });
  CHECK(!typed.empty());
  CHECK(erased == typed);
}

template <class Spec, class In>
void check_layer() {
  using L = typename Spec::template bind<In>;
  static_assert(Layer<L>, "the layer does not satisfy ctnn::Layer");
  static_assert(LayerSpecFor<Spec, In>);
  INFO(L::type_name());
  CHECK(!L::type_name().empty());
  using Net = Network<In, Sequential<Spec>>;
  Net net(7);

  // State: unique names, and a parameter layout that covers the value buffer exactly.
  std::set<std::string> names;
  std::size_t parameters = 0;
  for (const auto& e : net.state_entries()) {
    CHECK_MESSAGE(names.insert(e.name).second, e.name << " appears twice");
    if (e.kind == StateEntry::Kind::parameter) parameters += numel(e.shape);
  }
  CHECK(parameters == net.num_parameters());

  // reset_parameters is a function of the seed alone.
  const std::vector<float> initial(net.parameters().begin(), net.parameters().end());
  Net again(7);
  CHECK(std::vector<float>(again.parameters().begin(), again.parameters().end()) == initial);

  // Evaluation: forward returns output(), is repeatable, and treats samples independently.
  const auto x = random_batch<In>(3, 11, -1.0, 1.0, 0.05);
  net.eval();
  const auto& y = net.forward(x);
  CHECK(&y == &net.root().template get<0>().output());
  REQUIRE(y.batch() == 3);
  const std::vector<float> y_eval = y.to_nchw();
  CHECK(net.forward(x).to_nchw() == y_eval);
  check_leaf_views(net);
  Batch<In> x1;
  x1.from_nchw(x.to_nchw().data(), 1);
  const std::vector<float> y1 = net.forward(x1).to_nchw();
  for (std::size_t i = 0; i < y1.size(); ++i) CHECK(y1[i] == doctest::Approx(y_eval[i]).epsilon(1e-5));

  // Under NoGrad the same values, and a backward afterwards is refused.
  {
    const NoGrad no_grad;
    CHECK(net.forward(x).to_nchw() == y_eval);
  }
  Batch<typename Net::out_shape> dy(3);
  dy.fill(1.0f);
  CHECK_THROWS_AS(net.backward(x, dy), std::logic_error);

  // Training: the input and parameter gradients agree with finite differences, and backward
  // without an input gradient adds the same parameter gradients.
  net.train();
  GradCheckOptions o;
  o.h = 1e-3;
  require_gradients_ok(gradient_check(net, x, o, [&] { reset_random_state(net); }));
  reset_random_state(net);
  net.forward(x);
  net.zero_grad();
  Batch<In> dx;
  net.backward(x, dy, dx);
  CHECK(dx.batch() == 3);
  const std::vector<float> with_dx(net.gradients().begin(), net.gradients().end());
  net.zero_grad();
  net.backward(x, dy);
  CHECK(std::vector<float>(net.gradients().begin(), net.gradients().end()) == with_dx);
}

// A future pooling layer with a kernel_size and a draws counter: no convolution to an
// initialisation, no random state to a snapshot.
struct PoolWithKernelSize {
  static constexpr int kernel_size = 3, in_features = 4;
  std::uint64_t draws = 0;
};

template <class Spec, class In>
struct Case {
  using spec = Spec;
  using in = In;
};

}  // namespace

TEST_CASE_TEMPLATE("check_layer: every layer type fulfils the layer contract", C,
                   Case<Conv2d<3, 4, 3, 1, 1>, Shape<3, 6, 6>>, Case<Conv2d<3, 4, 1, 2, 0>, Shape<3, 5, 5>>,
                   Case<Conv2d<2, 3, 7, 2, 3>, Shape<2, 9, 9>>, Case<Linear<8, 5>, Features<8>>,
                   Case<BatchNorm2d<3>, Shape<3, 4, 4>>, Case<BatchNorm1d<6>, Features<6>>, Case<ReLU, Shape<2, 3, 3>>,
                   Case<MaxPool2d<2>, Shape<2, 4, 4>>, Case<MaxPool2d<3, 2, 0>, Shape<2, 7, 7>>,
                   Case<AvgPool2d<2, 1>, Shape<2, 3, 3>>, Case<Dropout<>, Features<16>>, Case<Flatten, Shape<2, 3, 3>>,
                   Case<Identity, Shape<2, 3, 3>>, Case<Sequential<Conv2d<2, 3, 3, 1, 1>, ReLU>, Shape<2, 4, 4>>,
                   Case<Residual<Conv2d<3, 3, 3, 1, 1>>, Shape<3, 4, 4>>, Case<Named<"fc", Linear<4, 3>>, Features<4>>,
                   Case<SiLU, Features<8>>) {
  check_layer<typename C::spec, typename C::in>();
}

TEST_CASE("layer_traits: the optional abilities are declared, not guessed from members") {
  static_assert(layer_traits<Dropout<>::bind<Features<4>>>::has_random_state);
  static_assert(!layer_traits<Linear<4, 4>::bind<Features<4>>>::has_random_state);
  static_assert(layer_traits<Conv2d<3, 4, 3, 1, 1>::bind<Shape<3, 6, 6>>>::init_role == InitRole::convolution);
  static_assert(layer_traits<Linear<4, 4>::bind<Features<4>>>::init_role == InitRole::linear);
  static_assert(PoolWithKernelSize::kernel_size > 0 && PoolWithKernelSize::in_features > 0,
                "it has the members the initialisations once took for a convolution's or a Linear's");
  static_assert(layer_traits<PoolWithKernelSize>::init_role == InitRole::none);
  static_assert(!layer_traits<PoolWithKernelSize>::has_random_state);
  static_assert(layer_traits<MaxPool2d<2>::bind<Shape<2, 4, 4>>>::init_role == InitRole::none);
  CHECK(layer_traits<Dropout<>::bind<Features<4>>>::has_random_state);
}

TEST_CASE("README's example of adding a layer is tests/support/example_layer.hpp, which this file compiles") {
  auto text = [](const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  const std::filesystem::path tests = std::filesystem::path(CTNN_GOLDEN_DIR).parent_path();
  const std::string example = text(tests / "support" / "example_layer.hpp");
  REQUIRE(example.size() > 500);
  CHECK(text(tests.parent_path() / "README.md").find("```cpp\n" + example + "```\n") != std::string::npos);
}
