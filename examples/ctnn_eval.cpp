// ctnn-eval: the test accuracy of a VGG16 or ResNet50_layer4 checkpoint (PyTorch's or ctnn's),
// with per-class accuracy and the confusion matrix. The program sees the network as a CifarNetwork
// (cifar_network.hpp): it is compiled once, and each network in a file of its own.
#include <ctnn/io/state_dict.hpp>
#include <ctnn/ops/gemm.hpp>
#include <ctnn/io/svg.hpp>
#include <ctnn/train/trainer.hpp>

#include <cstdio>
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "cifar_network.hpp"
#include "cli.hpp"

namespace {

const std::string kUsage =
    "usage: ctnn-eval --model vgg16|resnet50 --checkpoint CKPT [options]\n"
    "  --checkpoint CKPT a state_dict file (PyTorch's or ctnn's), a nested checkpoint, or ctnn-train's\n"
    "                    <model>_resume.ckpt (its weights)\n"
    "  --data DIR        cifar-10-batches-bin folder (default " + ctnn::cli::default_data_dir() + ",\n"
    "                    where the build's cifar10 target puts it)\n"
    "  --checkpoint-key KEY  the state_dict's key in a nested checkpoint (default: found, e.g. 'model_state_dict')\n"
    "  --strip-prefix P  remove P from the keys first ('module.' of nn.DataParallel, '_orig_mod.' of torch.compile)\n"
    "  --batch-size N    (default 100)\n"
    "  --threads N       worker threads (default: all cores)\n"
    "  --precision P     fp32 (default) or bf16 (products in bf16 with fp32 sums; fast with AVX512_BF16 or AMX)\n"
    "  --svg PATH        also draw the confusion matrix as an SVG heat map with the class names\n"
    "  --synthetic N     evaluate on the SYNTHETIC test set that ctnn-train --synthetic N --seed S used\n"
    "  --seed S          (with --synthetic; default 0)\n"
    "  --help\n";

int run(const ctnn::cli::CifarModel& model, const std::string& checkpoint, const ctnn::io::LoadOptions& load,
        const ctnn::data::Dataset& test, int batch_size, const std::string& svg) {
  const std::unique_ptr<ctnn::cli::CifarNetwork> network = model.make(0);  // every value is loaded
  ctnn::cli::CifarNetwork& net = *network;
  ctnn::cli::load_checkpoint(net, checkpoint, load, std::cout);
  const auto r = ctnn::evaluate(net, test, batch_size);
  std::cout << "Accuracy of the model on the test images: " << ctnn::cli::python_float(r.accuracy()) << " %\n\nper class:\n";
  constexpr int K = ctnn::cli::CifarNetwork::out_shape::channels;
  for (int c = 0; c < K; ++c) {
    const std::string name = c < static_cast<int>(test.class_names.size()) ? test.class_names[c] : std::to_string(c);
    std::printf("  %-12s %6.2f %%\n", name.c_str(), r.class_accuracy(c));
  }
  std::printf("\nconfusion matrix (rows: true class, columns: predicted):\n     ");
  for (int c = 0; c < K; ++c) std::printf("%6d", c);
  std::printf("\n");
  for (int t = 0; t < K; ++t) {
    std::printf("%4d ", t);
    for (int p = 0; p < K; ++p) std::printf("%6ld", r.confusion[t][p]);
    std::printf("\n");
  }
  if (!svg.empty()) {
    const std::string title = model.name + ", " + std::filesystem::path(checkpoint).filename().string() +
                              (test.synthetic ? " (SYNTHETIC data)" : "");
    ctnn::io::write_svg(svg, ctnn::io::confusion_matrix_svg(r.confusion, test.class_names, title));
    std::printf("\nConfusion matrix: %s\n", svg.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const ctnn::cli::Args args(argc, argv, {"model", "checkpoint", "data", "batch-size", "threads", "synthetic", "seed",
                                "checkpoint-key", "strip-prefix", "svg", "precision"},
                               {"help"});
    if (args.flag("help")) {
      std::cout << kUsage;
      return 0;
    }
    const std::vector<ctnn::cli::CifarModel> models = ctnn::cli::cifar_models();
    const ctnn::cli::CifarModel& model = ctnn::cli::model_option(args, models);
    const std::string checkpoint = args.get("checkpoint", "");
    if (checkpoint.empty()) throw ctnn::cli::UsageError("--checkpoint is required");
    ctnn::io::require_readable(checkpoint);  // before the data set: the cheaper mistake first
    const ctnn::io::LoadOptions load = ctnn::cli::load_options(args, true, "--checkpoint");
    if (args.has("svg")) {  // checked now, not after the whole evaluation
      const std::filesystem::path svg = args.get("svg", ""), svg_dir = svg.parent_path();
      if (!svg.has_filename() || std::filesystem::is_directory(svg))
        throw ctnn::cli::UsageError("--svg: '" + svg.string() + "' is a directory, not a file name");
      const std::filesystem::path dir = svg_dir.empty() ? "." : svg_dir;
      if (!std::filesystem::exists(dir))
        throw ctnn::cli::UsageError("--svg: the directory '" + dir.string() + "' does not exist");
      if (!std::filesystem::is_directory(dir))
        throw ctnn::cli::UsageError("--svg: '" + dir.string() + "' is not a directory");
      if (::access(dir.c_str(), W_OK) != 0)  // (the picture is written there, by a temporary file)
        throw ctnn::cli::UsageError("--svg: the directory '" + dir.string() + "' is not writable");
    }
    const int batch_size = static_cast<int>(args.integer("batch-size", 100, 1, 50000));
    const long synthetic = args.integer("synthetic", 0, 1, 1000000);
    ctnn::cli::check_data_source(args);
    if (args.has("seed") && synthetic == 0)  // it would change nothing
      throw ctnn::cli::UsageError("--seed applies to --synthetic only (the seed its images were generated from)");
    const auto seed = static_cast<std::uint64_t>(args.integer("seed", 0, 0, 1L << 62));
    ctnn::set_num_threads(static_cast<int>(args.integer("threads", 0, 1, 1024)));
    const ctnn::Precision precision = ctnn::cli::precision_option(args);
    std::cout << ctnn::ops::gemm_backend_summary() << "\n" << ctnn::cli::precision_summary(precision) << "\n";
    const ctnn::Autocast autocast(precision);
    if (synthetic > 0) std::cout << "*** SYNTHETIC DATA: evaluating on generated images, not CIFAR-10 ***\n";
    const ctnn::data::Dataset test = ctnn::cli::dataset(synthetic, seed, args.get("data", ctnn::cli::default_data_dir()),
                                                        ctnn::data::Split::test);
    return run(model, checkpoint, load, test, batch_size, args.get("svg", ""));
  } catch (const ctnn::cli::UsageError& e) {
    std::cerr << "ctnn-eval: " << e.what() << "\n(run ctnn-eval --help for the options)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "ctnn-eval: " << e.what() << "\n";
    return 1;
  }
}
