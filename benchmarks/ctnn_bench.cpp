// ctnn-bench: how fast ctnn trains and evaluates the assignment's networks, and how long each of
// their convolutions takes, on synthetic data (random normal images, random labels; the values
// do not change the cost of any kernel).
//
//   ctnn-bench --model vgg16 --mode train --batch-size 100 --threads 2 --steps 10
//     model=vgg16 mode=train batch=100 threads=2 steps=10 images_per_s=... gflops=... peak_rss_mib=...
//
//   ctnn-bench --conv 64,64,3,1,1,32     one convolution (Cin,Cout,K,stride,padding,input size)
//   ctnn-bench --conv all                every distinct convolution of both networks
//   ctnn-bench --list-convs              the distinct convolutions and how often each network uses them
//
// A training step is zero_grad + forward + CrossEntropyLoss + backward + Adam step; eval is a
// forward in eval mode. Warm-up steps (default 2) are not timed. images_per_s is
// batch * timed steps / their total wall time (images_per_s_best: batch / the fastest step, the
// figure least disturbed by other programs on a shared machine); gflops uses the networks' multiply-add count read
// from their types (2 FLOPs per multiply-add; a training step counted as three forwards:
// forward, input gradient, weight gradient). peak_rss_mib is the process's peak resident memory
// (getrusage ru_maxrss), which includes building the network and the synthetic batch.
//
// The convolution list is not written down here: it is read from the network types themselves,
// so it always matches what the networks run. A convolution is timed as a one-layer Network in
// training mode: forward, then backward with the input gradient (dx), which PyTorch's conv2d
// backward also computes when the input requires a gradient. fwd_ms / bwd_ms are medians over
// the timed repetitions, *_min the fastest.
#include <ctnn/ctnn.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli.hpp"

namespace {

const char* kUsage =
    "usage: ctnn-bench --model vgg16|resnet50 [--mode train|eval] [options]\n"
    "       ctnn-bench --conv Cin,Cout,K,S,P,H|all [options]\n"
    "       ctnn-bench --list-convs\n"
    "  --model NAME       vgg16 or resnet50 (ResNet50_layer4)\n"
    "  --mode MODE        train (zero_grad, forward, loss, backward, Adam step) or eval (default train)\n"
    "  --batch-size N     images per step (default 100)\n"
    "  --threads N        OpenMP threads (default 0 = all cores)\n"
    "  --steps N          timed steps, or timed repetitions per convolution (default 10)\n"
    "  --warmup N         untimed steps first (default 2; 1 for --conv)\n"
    "  --conv SHAPE       time one convolution's forward and backward; SHAPE is Cin,Cout,K,S,P,H\n"
    "                     as listed by --list-convs, or `all`\n"
    "  --list-convs       print the distinct convolutions of both networks and exit\n"
    "  --seed N           seed of the network and the synthetic data (default 1)\n"
    "  --breakdown        with --model: then time every layer alone on its own input shape and print\n"
    "                     one line of where a step's time goes, by layer kind\n"
    "  --gemm BACKEND     auto (default: chosen by the CPU's instruction set), eigen or openblas\n"
    "  --precision P      fp32 (default) or bf16 (convolutions and linear layers: bf16 products, fp32 sums)\n"
    "  --help\n";

using Clock = std::chrono::steady_clock;
using Image = ctnn::Shape<3, 32, 32>;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux reports KiB
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

template <class S>
void fill_normal(ctnn::Batch<S>& b, ctnn::Rng& rng) {
  for (std::size_t i = 0; i < b.size(); ++i) b.data()[i] = static_cast<float>(rng.normal());
}

// Multiply-adds of one sample's forward pass: every Conv2d and Linear of the network.
template <class Net>
double forward_macs(Net& net) {
  double macs = 0.0;
  net.for_each_layer([&](auto& layer, const std::string&) {
    using L = std::decay_t<decltype(layer)>;
    if constexpr (ctnn::layer_traits<L>::init_role == ctnn::InitRole::convolution) {
      macs += double(L::out_shape::size) * L::in_channels * L::kernel_size * L::kernel_size;
    } else if constexpr (ctnn::layer_traits<L>::init_role == ctnn::InitRole::linear) {
      macs += double(L::in_features) * L::out_features;
    }
  });
  return macs;
}

struct Options {
  std::string model, mode = "train", conv;
  int batch = 100, threads = 0, steps = 10, warmup = 2;
  std::uint64_t seed = 1;
  bool breakdown = false;
};

// A layer's kind for the breakdown: its type name up to the first parenthesis, convolutions with
// their kernel size ("Conv2d 3x3"), since the kinds cost differently per multiply-add.
template <class L>
std::string layer_kind() {
  std::string name = L::type_name();
  name = name.substr(0, name.find('('));
  if constexpr (ctnn::layer_traits<L>::init_role == ctnn::InitRole::convolution)
    if (name == "Conv2d") name += " " + std::to_string(L::kernel_size) + "x" + std::to_string(L::kernel_size);
  return name;
}

// Where a step's time goes: every leaf layer of the network timed alone (forward, and backward
// with its input gradient when training) on random input of its own shape, median of `reps`,
// summed by kind, plus the optimizer's step. Composite glue (residual sums) is what the layers'
// sum leaves of the whole step.
template <class Net>
void print_breakdown(Net& net, const Options& o, bool train, double step_ms, ctnn::Adam* optimizer) {
  std::map<std::string, double> ms;
  std::vector<std::string> order;
  ctnn::Rng rng(o.seed + 23);
  const int reps = std::max(3, std::min(o.steps, 5));
  net.for_each_layer([&](auto& layer, const std::string&) {
    using L = std::decay_t<decltype(layer)>;
    ctnn::Batch<typename L::in_shape> x(o.batch), dx;
    ctnn::Batch<typename L::out_shape> dy(o.batch);
    fill_normal(x, rng);
    fill_normal(dy, rng);
    std::vector<double> t;
    for (int i = 0; i <= reps; ++i) {  // the first call is a warm-up
      const auto t0 = Clock::now();
      layer.forward(x);
      if (train) layer.backward(x, dy, &dx);
      if (i > 0) t.push_back(seconds_since(t0));
    }
    const std::string kind = layer_kind<L>();
    if (!ms.count(kind)) order.push_back(kind);
    ms[kind] += 1e3 * median(t);
  });
  if (optimizer) {
    std::vector<double> t;
    for (int i = 0; i <= reps; ++i) {
      const auto t0 = Clock::now();
      optimizer->step();
      if (i > 0) t.push_back(seconds_since(t0));
    }
    order.push_back("Adam");
    ms["Adam"] = 1e3 * median(t);
  }
  double sum = 0.0;
  for (const auto& [k, v] : ms) sum += v;
  std::printf("breakdown model=%s mode=%s:", o.model.c_str(), o.mode.c_str());
  std::sort(order.begin(), order.end(), [&](const auto& a, const auto& b) { return ms[a] > ms[b]; });
  for (const auto& k : order) std::printf(" %s %.1f ms (%.0f%%),", k.c_str(), ms[k], 100.0 * ms[k] / sum);
  std::printf(" layers alone %.1f ms of a %.1f ms step\n", sum, step_ms);
}

// ---- whole networks -------------------------------------------------------------------------

template <class Net>
void run_model(const Options& o) {
  auto net = std::make_unique<Net>(o.seed);
  const bool train = o.mode == "train";
  ctnn::Rng rng(o.seed + 17);
  ctnn::Batch<Image> x(o.batch);
  fill_normal(x, rng);
  std::vector<int> labels(static_cast<std::size_t>(o.batch));
  for (auto& l : labels) l = static_cast<int>(rng.below(10));
  ctnn::CrossEntropyLoss<10> criterion;
  std::optional<ctnn::Adam> optimizer;  // only for training: its moments would inflate eval's peak memory
  if (train) optimizer.emplace(*net);
  net->train(train);

  volatile float sink = 0.0f;  // keeps the eval forward's result observable
  auto step = [&] {
    if (train) {
      net->zero_grad();
      sink = criterion.forward(net->forward(x), labels);
      net->backward(x, criterion.grad());
      optimizer->step();
    } else {
      const ctnn::NoGrad no_grad;  // as PyTorch's side: `with torch.no_grad():`
      sink = net->forward(x).data()[0];
    }
  };
  for (int i = 0; i < o.warmup; ++i) step();
  std::vector<double> times;
  const auto t_all = Clock::now();
  for (int i = 0; i < o.steps; ++i) {
    const auto t0 = Clock::now();
    step();
    times.push_back(seconds_since(t0));
  }
  const double total = seconds_since(t_all);
  (void)sink;

  const double images_per_s = double(o.batch) * o.steps / total;
  const double best = *std::min_element(times.begin(), times.end());
  const double flop_per_image = 2.0 * forward_macs(*net) * (train ? 3.0 : 1.0);
  std::printf(
      "model=%s mode=%s batch=%d threads=%d steps=%d images_per_s=%.1f gflops=%.1f step_ms_mean=%.1f "
      "step_ms_median=%.1f step_ms_min=%.1f images_per_s_best=%.1f gflop_per_image=%.4f peak_rss_mib=%.0f "
      "gemm=%s isa=%s precision=%s\n",
      o.model.c_str(), o.mode.c_str(), o.batch, ctnn::num_threads(), o.steps, images_per_s,
      images_per_s * flop_per_image * 1e-9, 1e3 * total / o.steps, 1e3 * median(times), 1e3 * best,
      o.batch / best, flop_per_image * 1e-9, peak_rss_mib(), ctnn::ops::backend_name(ctnn::ops::gemm_backend()),
      ctnn::ops::isa_name(ctnn::ops::cpu_isa()), ctnn::precision_name(ctnn::matmul_precision()));
  if (o.breakdown) print_breakdown(*net, o, train, 1e3 * median(times), optimizer ? &*optimizer : nullptr);
}

// ---- single convolutions ----------------------------------------------------------------------

template <class L>
std::string conv_key() {
  std::ostringstream s;
  s << L::in_channels << ',' << L::out_channels << ',' << L::kernel_size << ',' << L::stride << ','
    << L::padding << ',' << L::in_shape::height;
  return s.str();
}

// Times a one-convolution network built from the bound layer type L.
template <class L>
void run_conv(const Options& o, const std::map<std::string, std::pair<int, int>>& uses) {
  using In = typename L::in_shape;
  using Spec = ctnn::Conv2d<L::in_channels, L::out_channels, L::kernel_size, L::stride, L::padding>;
  using Net = ctnn::Network<In, ctnn::Sequential<Spec>>;
  using Out = typename Net::out_shape;
  static_assert(In::height == In::width, "the assignment's convolutions are square");

  auto net = std::make_unique<Net>(o.seed);
  ctnn::Rng rng(o.seed + 29);
  ctnn::Batch<In> x(o.batch), dx;
  ctnn::Batch<Out> dy(o.batch);
  fill_normal(x, rng);
  fill_normal(dy, rng);
  volatile float sink = 0.0f;
  std::vector<double> fwd, bwd;
  for (int i = 0; i < o.warmup + o.steps; ++i) {
    const auto t0 = Clock::now();
    sink = net->forward(x).data()[0];
    const double tf = seconds_since(t0);
    const auto t1 = Clock::now();
    net->backward(x, dy, dx);
    const double tb = seconds_since(t1);
    sink = dx.data()[0];
    if (i >= o.warmup) {
      fwd.push_back(tf);
      bwd.push_back(tb);
    }
  }
  (void)sink;
  const double flop = 2.0 * double(Out::size) * L::in_channels * L::kernel_size * L::kernel_size * o.batch;
  const double f = median(fwd), b = median(bwd);
  const double fmin = *std::min_element(fwd.begin(), fwd.end()), bmin = *std::min_element(bwd.begin(), bwd.end());
  const auto& u = uses.at(conv_key<L>());
  std::printf(
      "conv=%s out=%d batch=%d threads=%d reps=%d fwd_ms=%.3f bwd_ms=%.3f fwd_ms_min=%.3f bwd_ms_min=%.3f "
      "fwd_gflops=%.1f bwd_gflops=%.1f uses_vgg16=%d uses_resnet50=%d\n",
      conv_key<L>().c_str(), Out::height, o.batch, ctnn::num_threads(), o.steps, 1e3 * f, 1e3 * b, 1e3 * fmin,
      1e3 * bmin, flop / f * 1e-9, 2.0 * flop / b * 1e-9, u.first, u.second);
  std::fflush(stdout);
}

// Calls f(layer) for the first occurrence of every distinct convolution of both networks, in
// network order (VGG16 first), after counting how often each network uses each shape.
template <class F>
void for_each_distinct_conv(F&& f, std::map<std::string, std::pair<int, int>>& uses) {
  std::vector<std::string> seen;
  auto visit = [&](auto& net, bool vgg) {
    net.for_each_layer([&](auto& layer, const std::string&) {
      using L = std::decay_t<decltype(layer)>;
      if constexpr (ctnn::layer_traits<L>::init_role == ctnn::InitRole::convolution) {
        const std::string k = conv_key<L>();
        auto& u = uses[k];
        (vgg ? u.first : u.second) += 1;
        if (std::find(seen.begin(), seen.end(), k) == seen.end()) {
          seen.push_back(k);
          f(layer);
        }
      }
    });
  };
  // Building the networks only to walk their layer types: parameters are not used.
  visit(*std::make_unique<ctnn::VGG16>(0), true);
  visit(*std::make_unique<ctnn::ResNet50_layer4<10>>(0), false);
}

int run_convs(const Options& o, bool list_only) {
  std::map<std::string, std::pair<int, int>> uses;
  std::vector<std::string> order;
  for_each_distinct_conv([&](auto& layer) { order.push_back(conv_key<std::decay_t<decltype(layer)>>()); }, uses);
  if (list_only) {
    std::printf("# Cin,Cout,K,S,P,H uses_vgg16 uses_resnet50\n");
    for (const auto& k : order) std::printf("%s %d %d\n", k.c_str(), uses[k].first, uses[k].second);
    return 0;
  }
  if (o.conv != "all" && std::find(order.begin(), order.end(), o.conv) == order.end())
    throw ctnn::cli::UsageError("--conv " + o.conv +
                                " is not a convolution of VGG16 or ResNet50_layer4 (see --list-convs)");
  std::map<std::string, std::pair<int, int>> ignored;
  for_each_distinct_conv(
      [&](auto& layer) {
        using L = std::decay_t<decltype(layer)>;
        if (o.conv == "all" || o.conv == conv_key<L>()) run_conv<L>(o, uses);
      },
      ignored);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const ctnn::cli::Args args(argc, argv, {"model", "mode", "batch-size", "threads", "steps", "warmup", "conv", "seed", "gemm", "precision"},
                               {"list-convs", "help", "breakdown"});
    if (args.flag("help")) {
      std::cout << kUsage;
      return 0;
    }
    Options o;
    o.model = args.get("model", "");
    o.mode = args.get("mode", "train");
    o.conv = args.get("conv", "");
    o.batch = static_cast<int>(args.integer("batch-size", 100, 2, 100000));
    o.threads = static_cast<int>(args.integer("threads", 0, 0, 1024));
    o.steps = static_cast<int>(args.integer("steps", 10, 1, 1000000));
    o.seed = static_cast<std::uint64_t>(args.integer("seed", 1, 0, 1L << 62));
    const bool convs = args.has("conv") || args.flag("list-convs");
    o.breakdown = args.flag("breakdown");
    o.warmup = static_cast<int>(args.integer("warmup", convs ? 1 : 2, 0, 1000000));
    if (convs && args.has("model"))
      throw ctnn::cli::UsageError("--model cannot be combined with --conv or --list-convs");
    if (convs && o.breakdown) throw ctnn::cli::UsageError("--breakdown applies to --model runs only");
    if (convs && args.has("mode")) throw ctnn::cli::UsageError("--mode applies to --model runs only");
    if (o.mode != "train" && o.mode != "eval")
      throw ctnn::cli::UsageError("--mode must be train or eval, got '" + o.mode + "'");
    ctnn::set_num_threads(o.threads);
    const std::string gemm = args.get("gemm", "auto");
    if (gemm == "eigen" || gemm == "openblas") {
      try {
        ctnn::ops::set_gemm_backend(gemm == "eigen" ? ctnn::ops::GemmBackend::eigen : ctnn::ops::GemmBackend::openblas);
      } catch (const std::invalid_argument& e) {
        throw ctnn::cli::UsageError(std::string("--gemm openblas: ") + e.what());
      }
    } else if (gemm != "auto") {
      throw ctnn::cli::UsageError("--gemm must be auto, eigen or openblas, got '" + gemm + "'");
    }
    const ctnn::Precision precision = ctnn::cli::precision_option(args);
    std::fprintf(stderr, "ctnn-bench: %s\nctnn-bench: %s\n", ctnn::ops::gemm_backend_summary().c_str(),
                 ctnn::cli::precision_summary(precision).c_str());
    const ctnn::Autocast autocast(precision);

    if (convs) return run_convs(o, args.flag("list-convs"));
    if (o.model == "vgg16") {
      run_model<ctnn::VGG16>(o);
    } else if (o.model == "resnet50") {
      run_model<ctnn::ResNet50_layer4<10>>(o);
    } else if (o.model.empty()) {
      throw ctnn::cli::UsageError("--model is required (vgg16 or resnet50), or use --conv / --list-convs");
    } else {
      throw ctnn::cli::UsageError("--model must be vgg16 or resnet50, got '" + o.model + "'");
    }
    return 0;
  } catch (const ctnn::cli::UsageError& e) {
    std::cerr << "ctnn-bench: " << e.what() << " (--help lists the options)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "ctnn-bench: " << e.what() << "\n";
    return 1;
  }
}
