// The assignment's training loop as a library piece: logging, learning-rate decay, early stop,
// evaluation, on small SYNTHETIC data sets generated here.
#include "support/check.hpp"

#include <ctnn/train/trainer.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "support/temp_dir.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <atomic>
#include <csignal>
#include <cstring>
#include <limits>

using namespace ctnn;
using namespace ctnn::test;

namespace {
using SmallNet = Network<Shape<3, 32, 32>, Sequential<Conv2d<3, 8, 3, 1, 1>, BatchNorm2d<8>, ReLU, MaxPool2d<4>,
                                                      Conv2d<8, 16, 3, 1, 1>, ReLU, MaxPool2d<8>, Flatten,
                                                      Linear<16, 10>>>;
}  // namespace

// The Trainer keeps a pointer to its replicas: a temporary (set_replicas(TrainerReplicas(comm)))
// would dangle by fit(), so it does not compile.
template <class T>
constexpr bool takes_replicas = requires(T& t, const Replicas& r) { t.set_replicas(r); };
template <class T>
constexpr bool takes_temporary_replicas = requires(T& t, const Replicas& r) { t.set_replicas(std::move(r)); };
static_assert(takes_replicas<Trainer<SmallNet>> && !takes_temporary_replicas<Trainer<SmallNet>>);

TEST_CASE("Trainer: the loss goes down on a learnable task and the log reads like main.py's") {
  const auto train = data::make_synthetic_cifar(1000, 1);
  const auto test = data::make_synthetic_cifar(200, 2);
  SmallNet net(0);
  TrainerOptions o;
  o.epochs = 2;
  o.batch_size = 50;
  o.lr = 3e-3;
  o.log_every = 4;
  const TempDir tmp("ctnn_test_trainer");
  o.out_dir = tmp.path;
  o.model_name = "small";
  Trainer<SmallNet> trainer(net, o);
  struct Seen : TrainingObserver {
    std::vector<int> epochs;
    long steps = 0, pauses = 0;
    void on_step(const StepReport& r) override { steps += r.total_steps == steps + 1; }
    void on_pause() override { ++pauses; }
    void on_epoch_end(int e) override { epochs.push_back(e); }
  } seen;
  trainer.add_observer(seen);
  std::ostringstream log;
  trainer.fit(train, log);
  CHECK(seen.epochs == std::vector<int>{1, 2});
  CHECK(seen.steps == 40);        // every step, in order
  CHECK(seen.pauses == 10 + 2);   // before each of the 10 log lines, and at each epoch's end
  CHECK(log.str().find("Epoch [1/2], Step [4/20] Loss: ") != std::string::npos);
  CHECK(log.str().find("Epoch [2/2], Step [20/20] Loss: ") != std::string::npos);

  std::ifstream csv(trainer.csv_path());
  std::string header, line;
  std::getline(csv, header);
  CHECK(header == "epoch,step,loss,running_loss,lr");
  // Every row in order; its running loss the mean of the epoch's losses so far, as main.py's
  // running_loss / (i + 1) (the losses as logged, to 6 digits: within 1e-5).
  std::vector<double> losses;
  double sum = 0.0;
  for (int want_epoch = 1, want_step = 1; std::getline(csv, line);) {
    std::vector<double> f;
    std::stringstream cells(line);
    for (std::string cell; std::getline(cells, cell, ',');) f.push_back(std::stod(cell));
    REQUIRE(f.size() == 5);
    CHECK(f[0] == want_epoch);
    CHECK(f[1] == want_step);
    if (want_step == 1) sum = 0.0;
    sum += f[2];
    CHECK(f[3] == doctest::Approx(sum / want_step).epsilon(1e-5));
    losses.push_back(f[2]);
    if (++want_step > 20) want_step = 1, ++want_epoch;
  }
  CHECK(losses.size() == 40);
  INFO("loss " << losses.front() << " -> " << losses.back());
  CHECK(losses.back() < 0.5 * losses.front());

  const auto r = evaluate(net, test);
  CHECK(net.is_training());  // evaluate restores the mode it found
  CHECK(r.total == 200);
  // Its counts against a recount: batches of 7, with gradients on (no BatchNorm folded into the
  // convolutions), each prediction counted by hand. The same bits on ctnn's kernel (the folded
  // epilogue keeps them); on OpenBLAS a near-tie of two logits could in principle flip one.
  std::array<std::array<long, 10>, 10> confusion{};
  long correct = 0;
  {
    net.eval();
    data::DataLoader loader(test, data::LoaderOptions::test(7));
    data::LoaderBatch b;
    loader.start_epoch(0);
    while (loader.next(b)) {
      const auto& logits = net.forward(b.images);
      for (int i = 0; i < b.size(); ++i) {
        const int p = argmax(logits, i);
        ++confusion[b.labels[i]][p];
        correct += p == b.labels[i];
      }
    }
    net.train();
  }
  CHECK(r.correct == correct);
  CHECK(r.confusion == confusion);
  CHECK(r.accuracy() == doctest::Approx(100.0 * correct / 200));
  INFO("accuracy " << r.accuracy());
  CHECK(r.accuracy() > 50.0);  // chance is 10%
}

TEST_CASE("Trainer: the learning rate is divided every lr_decay_every epochs; max_steps stops early") {
  const auto train = data::make_synthetic_cifar(40, 3);
  SmallNet net(0);
  TrainerOptions o;
  o.epochs = 4;
  o.batch_size = 20;
  o.lr = 0.09;
  o.lr_decay_every = 2;
  o.lr_decay_factor = 3;
  Trainer<SmallNet> trainer(net, o);
  std::ostringstream log;
  trainer.fit(train, log);
  CHECK(trainer.optimizer().lr() == doctest::Approx(0.01));
  CHECK(trainer.optimizer().steps() == 8);

  SmallNet net2(0);
  o.max_steps = 3;
  Trainer<SmallNet> short_run(net2, o);
  short_run.fit(train, log);
  CHECK(short_run.optimizer().steps() == 3);
}

TEST_CASE("Trainer over an AnyNetwork (as ctnn-train runs it): the same run, bit for bit, as over the Network") {
  const auto train = data::make_synthetic_cifar(120, 5);
  const auto test = data::make_synthetic_cifar(60, 6);
  TrainerOptions o;
  o.epochs = 2;
  o.batch_size = 20;
  o.lr = 3e-3;
  o.log_every = 2;
  SmallNet direct(4);
  std::ostringstream direct_log;
  Trainer<SmallNet>(direct, o).fit(train, direct_log);

  AnyNetworkOf<SmallNet> owned(4);
  AnyNetwork<Shape<3, 32, 32>, Features<10>>& any = owned;
  CHECK(any.num_parameters() == direct.num_parameters());
  std::ostringstream any_log;
  Trainer<AnyNetwork<Shape<3, 32, 32>, Features<10>>>(any, o).fit(train, any_log);
  CHECK(any_log.str() == direct_log.str());
  const auto p = any.parameters(), q = direct.parameters();
  CHECK(std::equal(p.begin(), p.end(), q.begin(), q.end()));  // exact: the same arithmetic in the same order
  // Buffers and counters too (BatchNorm's running statistics and batch counts), seen through
  // the state walk, bit for bit.
  CHECK(any.state_entries().size() == direct.state_entries().size());
  const auto slots_any = io::detail::slots_of(any), slots_direct = io::detail::slots_of(direct);
  REQUIRE(slots_any.size() == slots_direct.size());
  for (std::size_t i = 0; i < slots_any.size(); ++i) {
    CAPTURE(slots_direct[i].name);
    CHECK(slots_any[i].name == slots_direct[i].name);
    if (slots_direct[i].counter) {
      REQUIRE(slots_any[i].counter);
      CHECK(*slots_any[i].counter == *slots_direct[i].counter);
    } else {
      CHECK(bit_patterns(slots_any[i].values) == bit_patterns(slots_direct[i].values));
    }
  }
  const auto a = evaluate(any, test), d = evaluate(direct, test);
  CHECK(a.correct == d.correct);
  CHECK(a.confusion == d.confusion);
  std::ostringstream sa, sd;
  any.summary(sa);
  direct.summary(sd);
  CHECK(sa.str() == sd.str());
  any.eval();
  CHECK_FALSE(owned.network().is_training());
  owned.train();  // the default argument, through the owning type too
  CHECK(owned.network().is_training());
}

TEST_CASE("Trainer rejects impossible options") {
  SmallNet net(0);
  TrainerOptions o;
  o.epochs = 0;
  CHECK_THROWS_AS(Trainer<SmallNet>(net, o), std::invalid_argument);
  o.epochs = 1;
  o.batch_size = 0;
  CHECK_THROWS_AS(Trainer<SmallNet>(net, o), std::invalid_argument);
  o.batch_size = 10;
  o.log_every = 0;  // (a modulus of zero)
  CHECK_THROWS_WITH_AS(Trainer<SmallNet>(net, o), doctest::Contains("log_every"), std::invalid_argument);
  o.log_every = 100;
  // Refused at once, not at the first decay (20 epochs in, by default, after the last snapshot).
  for (const double factor : {0.0, -3.0, std::nan("")}) {
    o.lr_decay_factor = factor;
    CHECK_THROWS_WITH_AS(Trainer<SmallNet>(net, o), doctest::Contains("lr_decay_factor"), std::invalid_argument);
  }
  o.lr_decay_every = 0;  // no decay: the factor is never used
  CHECK_NOTHROW(Trainer<SmallNet>(net, o));
  o.lr_decay_factor = 3.0;
  o.lr_decay_every = -1;
  CHECK_THROWS_WITH_AS(Trainer<SmallNet>(net, o), doctest::Contains("lr_decay_every"), std::invalid_argument);
  o.lr_decay_every = 20;
  o.max_steps = -2;
  CHECK_THROWS_WITH_AS(Trainer<SmallNet>(net, o), doctest::Contains("max_steps"), std::invalid_argument);
  o.max_steps = -1;
  o.checkpoint_every = -1;
  CHECK_THROWS_WITH_AS(Trainer<SmallNet>(net, o), doctest::Contains("checkpoint_every"), std::invalid_argument);
}

TEST_CASE("Trainer: a last batch a layer cannot train on is named with its step and size") {
  // 41 images in batches of 20 leave a last batch of one, on which BatchNorm1d (as PyTorch's)
  // cannot compute a variance.
  using FlatNet = Network<Shape<3, 32, 32>, Sequential<MaxPool2d<8>, Flatten, Linear<48, 6>, BatchNorm1d<6>, ReLU,
                                                       Linear<6, 10>>>;
  FlatNet net(0);
  TrainerOptions o;
  o.batch_size = 20;
  std::ostringstream log;
  CHECK_THROWS_WITH_AS(Trainer<FlatNet>(net, o).fit(data::make_synthetic_cifar(41, 3), log),
                       doctest::Contains("step 3 (epoch 1, batch 3 of 3), a batch of 1 image: BatchNorm"),
                       std::invalid_argument);
}

TEST_CASE("Trainer and evaluate refuse an empty data set") {
  SmallNet net(0);
  auto empty = data::make_synthetic_cifar(10, 1);
  empty.labels.clear();
  empty.pixels.clear();
  std::ostringstream log;
  CHECK_THROWS_WITH_AS(Trainer<SmallNet>(net, TrainerOptions{}).fit(empty, log), doctest::Contains("holds no images"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(evaluate(net, empty), doctest::Contains("holds no images"), std::invalid_argument);
}

namespace {
// Two epochs of 3 batches (60 images, batches of 20), files `name`_* in `dir`, stopped after
// `max_steps` steps: a run that leaves a resume snapshot.
TrainerOptions two_short_epochs(const std::filesystem::path& dir, const char* name, long max_steps) {
  TrainerOptions o;
  o.batch_size = 20;
  o.epochs = 2;
  o.out_dir = dir;
  o.model_name = name;
  o.max_steps = max_steps;
  return o;
}
}  // namespace

TEST_CASE("Trainer: max_steps 0 leaves the snapshot its message names; a resume beyond the run's epochs is refused") {
  const auto train = data::make_synthetic_cifar(60, 5);
  const TempDir dir("ctnn_test_trainer_zero_steps");
  TrainerOptions o = two_short_epochs(dir.path, "zero", 0);
  SmallNet net(0);
  std::ostringstream log;
  Trainer<SmallNet>(net, o).fit(train, log);
  CHECK(log.str().find("continues it from") != std::string::npos);
  CHECK(std::filesystem::exists(dir.path / "zero_resume.ckpt"));
  CHECK(std::filesystem::exists(dir.path / "zero_step0.ckpt"));
  // A snapshot in epoch 2, resumed by a run of one epoch: refused, not reported as finished.
  o.max_steps = 4;
  o.resume = true;
  Trainer<SmallNet>(net, o).fit(train, log);
  o.epochs = 1;
  o.max_steps = -1;
  CHECK_THROWS_WITH_AS(Trainer<SmallNet>(net, o).fit(train, log), doctest::Contains("beyond this run's 1 epoch"),
                       io::CheckpointError);
  CHECK_FALSE(std::filesystem::exists(dir.path / "zero_final.ckpt"));
}

TEST_CASE("evaluate refuses labels the network has no class for, and leaves its mode as it was") {
  using FiveClasses = Network<Shape<3, 32, 32>, Sequential<MaxPool2d<8>, Flatten, Linear<48, 5>>>;
  FiveClasses net(0);
  const auto test = data::make_synthetic_cifar(40, 3);  // labels 0-9
  CHECK_THROWS_WITH_AS(evaluate(net, test), doctest::Contains("only 5 classes"), std::invalid_argument);
  CHECK(net.is_training());
  const auto five = data::make_synthetic_cifar(40, 3);
  auto fit = five;
  for (auto& label : fit.labels) label %= 5;
  CHECK_THROWS_AS(evaluate(net, fit, /*batch_size=*/0), std::invalid_argument);  // thrown after eval()
  CHECK(net.is_training());
}

TEST_CASE("One Trainer fits twice: the second run writes its own log and checkpoints") {
  const auto train = data::make_synthetic_cifar(60, 5);
  const TempDir dir("ctnn_test_trainer_twice");
  TrainerOptions o;
  o.batch_size = 20;
  o.out_dir = dir.path;
  o.model_name = "twice";
  SmallNet net(0);
  Trainer<SmallNet> trainer(net, o);
  std::ostringstream log;
  auto log_lines = [&] {
    std::ifstream csv(dir.path / "twice_train_log.csv");
    int lines = 0;
    for (std::string line; std::getline(csv, line);) ++lines;
    return lines;
  };
  trainer.fit(train, log);
  const int first = log_lines();
  CHECK(first > 3);
  std::filesystem::remove(dir.path / "twice_final.ckpt");
  trainer.fit(train, log);
  CHECK(std::filesystem::exists(dir.path / "twice_final.ckpt"));
  CHECK(log_lines() == first);  // the second run's log, not the first one's with more rows
}

namespace {
using DropNet = Network<Shape<3, 32, 32>, Sequential<Conv2d<3, 8, 3, 1, 1>, BatchNorm2d<8>, ReLU, MaxPool2d<4>,
                                                     Conv2d<8, 16, 3, 1, 1>, ReLU, MaxPool2d<8>, Flatten,
                                                     Dropout<>, Linear<16, 10>>>;

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Three epochs of 10 steps on 200 images, the learning rate decayed every 2 epochs, a
// checkpoint every 4: runs that stop and resume cross every boundary.
TrainerOptions three_short_epochs() {
  TrainerOptions o;
  o.epochs = 3;
  o.batch_size = 20;
  o.lr_decay_every = 2;
  o.checkpoint_every = 4;
  o.model_name = "drop";
  return o;
}

// Sets the stop flag to `signal` as a signal handler would (train/stop.hpp) when step `step` is
// reported: observers hear of a step before the trainer looks at the flag, so it is as if the
// signal came during that step.
struct SignalAtStep : TrainingObserver {
  std::atomic<int>& flag;
  long step;
  int signal;
  SignalAtStep(std::atomic<int>& f, long s, int sig) : flag(f), step(s), signal(sig) {}
  void on_step(const StepReport& r) override {
    if (r.total_steps == step) flag = signal;
  }
};
}  // namespace

TEST_CASE("Trainer writes main.py's checkpoints, and --resume after a stop gives bit-identical weights") {
  const auto train = data::make_synthetic_cifar(200, 7);
  TrainerOptions o = three_short_epochs();
  std::ostringstream log;

  const TempDir whole("ctnn_test_trainer_whole");
  o.out_dir = whole.path;
  DropNet a(1);
  Trainer<DropNet>(a, o).fit(train, log);
  CHECK(std::filesystem::exists(whole.path / "drop_epoch2.ckpt"));
  CHECK(!std::filesystem::exists(whole.path / "drop_epoch1.ckpt"));
  CHECK(std::filesystem::exists(whole.path / "drop_final.ckpt"));
  // The final checkpoint is a PyTorch state_dict of the trained network.
  DropNet reloaded(99);
  io::load_state_dict(reloaded, whole.path / "drop_final.ckpt");
  CHECK(std::equal(a.parameters().begin(), a.parameters().end(), reloaded.parameters().begin()));

  const TempDir parts("ctnn_test_trainer_parts");
  o.out_dir = parts.path;
  {
    DropNet b(1);
    TrainerOptions first = o;
    first.max_steps = 13;  // stops in the middle of epoch 2
    first.resume = true;   // with nothing to resume from: a new run, and the log says so
    std::ostringstream first_log;
    Trainer<DropNet>(b, first).fit(train, first_log);
    CHECK(first_log.str().find("No " + (parts.path / "drop_resume.ckpt").string() +
                               " to resume from: starting a new run\n") != std::string::npos);
    CHECK(!std::filesystem::exists(parts.path / "drop_final.ckpt"));
  }
  // As a run killed after its snapshot leaves the log: rows of steps it trained afterwards,
  // and a last row cut short that reads like an earlier one ("2,1" of "2,14,...").
  std::ofstream(parts.path / "drop_train_log.csv", std::ios::app) << "2,4,9.9,9.9,0.001\n2,5,9.9,9.9,0.001\n2,1";
  DropNet c(12345);  // a different initialisation: everything must come from the snapshot
  TrainerOptions rest = o;
  rest.resume = true;
  std::ostringstream resumed_log;
  Trainer<DropNet> resumed(c, rest);
  resumed.fit(train, resumed_log);
  CHECK(resumed_log.str().find("Resuming from") != std::string::npos);
  CHECK(resumed.optimizer().steps() == 30);
  CHECK(std::memcmp(a.parameters().data(), c.parameters().data(), a.num_parameters() * sizeof(float)) == 0);
  CHECK(read_text(whole.path / "drop_train_log.csv") == read_text(parts.path / "drop_train_log.csv"));
  CHECK(read_text(whole.path / "drop_final.ckpt") == read_text(parts.path / "drop_final.ckpt"));

  // A snapshot from another configuration is refused with a clear message.
  DropNet d(1);
  TrainerOptions other = rest;
  other.seed = 5;
  Trainer<DropNet> wrong(d, other);
  CHECK_THROWS_WITH(wrong.fit(train, log), doctest::Contains("resume with the same --seed and --batch-size"));
}

TEST_CASE("Trainer: a snapshot with an impossible position or learning rate is refused before the log is touched") {
  const auto train = data::make_synthetic_cifar(60, 3);
  const TempDir dir("ctnn_test_trainer_bad_snapshot");
  TrainerOptions o = two_short_epochs(dir.path, "bad", 2);  // a snapshot at epoch 1, batch 2
  std::ostringstream log;
  {
    SmallNet net(0);
    Trainer<SmallNet>(net, o).fit(train, log);
  }
  const auto snapshot = dir.path / "bad_resume.ckpt", csv = dir.path / "bad_train_log.csv";
  const io::StateDict good = io::read_checkpoint(snapshot);
  const std::string rows = read_text(csv);
  REQUIRE(std::count(rows.begin(), rows.end(), '\n') == 3);  // the header and two steps
  o.resume = true;
  o.max_steps = -1;
  // A refused snapshot changes nothing: not the log, not the network, not the optimizer (its
  // weights were loaded before the rest was checked, and the learning rate set before its check).
  const SmallNet initial(0);
  auto refused_file = [&](const io::StateDict& sd, const std::string& start, const char* why) {
    CAPTURE(why);
    io::write_checkpoint(snapshot, sd);
    SmallNet net(0);
    Trainer<SmallNet> trainer(net, o);
    std::string message;
    try {
      trainer.fit(train, log);
    } catch (const io::CheckpointError& e) {
      message = e.what();
    }
    CHECK(message.find(snapshot.string() + start) == 0);
    CHECK(message.find(why) != std::string::npos);
    CHECK(read_text(csv) == rows);  // the log of the steps done is kept, not cut to its header
    CHECK_FALSE(std::filesystem::exists(dir.path / "bad_final.ckpt"));
    CHECK(std::memcmp(net.parameters().data(), initial.parameters().data(), net.num_parameters() * sizeof(float)) == 0);
    CHECK(trainer.optimizer().lr() == o.lr);
    CHECK(trainer.optimizer().steps() == 0);
  };
  auto refused = [&](std::vector<std::pair<std::string, std::int64_t>> entries, const char* why) {
    io::StateDict sd = good;
    for (const auto& [key, value] : entries) sd.insert_or_assign(key, io::Tensor::scalar_int64(value));
    refused_file(sd, ": is corrupt", why);
  };
  refused({{"trainer.epoch", 0}}, "trainer.epoch is 0");
  refused({{"trainer.epoch", (std::int64_t{1} << 32) + 1}}, "not an epoch number");  // not narrowed to epoch 1
  refused({{"trainer.batch", -3}}, "trainer.batch is -3");
  refused({{"trainer.batch", 100}, {"trainer.total_steps", 100}}, "batch 100 of an epoch of 3 batches");
  refused({{"trainer.total_steps", -7}}, "trainer.total_steps is -7");
  refused({{"trainer.total_steps", 1}}, "2 batches of this epoch are done but 1 steps in all");
  refused({{"trainer.loss_sum_bits", std::bit_cast<std::int64_t>(std::numeric_limits<double>::quiet_NaN())}},
          "sum of losses");
  refused({{"trainer.loss_sum_bits", std::bit_cast<std::int64_t>(-1.0)}}, "sum of losses");
  refused({{"optimizer.lr_bits", std::bit_cast<std::int64_t>(-1.0)}}, "learning rate");
  refused({{"optimizer.lr_bits", std::bit_cast<std::int64_t>(std::numeric_limits<double>::infinity())}},
          "learning rate");
  {  // a moment of the wrong size, after the weights and the other moment fit
    io::StateDict sd = good;
    const std::vector<float> short_moment(7, 0.5f);
    sd.insert_or_assign("optimizer.exp_avg_sq", io::Tensor::from_floats({7}, short_moment));
    refused_file(sd, ": entry 'optimizer.exp_avg_sq'", "does not fit");
  }
  {  // another run's Adam: its betas are kept in the snapshot and compared
    io::StateDict sd = good;
    sd.insert_or_assign("optimizer_options.beta2_bits", io::Tensor::scalar_int64(std::bit_cast<std::int64_t>(0.9)));
    refused_file(sd, ": was written by a run whose optimizer had beta2 = 0.9; this run's has 0.999", "same optimizer options");
  }
  // The snapshot as it was still resumes.
  io::write_checkpoint(snapshot, good);
  SmallNet net(0);
  Trainer<SmallNet>(net, o).fit(train, log);
  CHECK(std::filesystem::exists(dir.path / "bad_final.ckpt"));
}

TEST_CASE("Trainer: a stop request ends the run after the step in progress, saving the snapshot and the weights") {
  const auto train = data::make_synthetic_cifar(200, 7);
  TrainerOptions o = three_short_epochs();
  std::ostringstream log;
  const TempDir whole("ctnn_test_trainer_stop_whole");
  o.out_dir = whole.path;
  DropNet a(1);
  Trainer<DropNet>(a, o).fit(train, log);

  // The flag as a signal handler sets it, here in the middle of step 13.
  const TempDir parts("ctnn_test_trainer_stop_parts");
  o.out_dir = parts.path;
  std::atomic<int> flag{0};
  SignalAtStep signaller(flag, 13, SIGTERM);
  DropNet b(1);
  Trainer<DropNet> stopped(b, o);
  stopped.add_observer(signaller);
  stopped.stop_when(flag);
  std::ostringstream stop_log;
  stopped.fit(train, stop_log);
  CHECK(stopped.interrupted());
  CHECK(!stopped.finished());
  CHECK(stopped.optimizer().steps() == 13);  // the step in progress finished, no other began
  CHECK(stop_log.str().find("Stopped after step 13 of 30: SIGTERM received") != std::string::npos);
  CHECK(stopped.stopped_weights() == parts.path / "drop_step13.ckpt");
  CHECK(stop_log.str().find("Weights after step 13: " + (parts.path / "drop_step13.ckpt").string()) !=
        std::string::npos);
  CHECK(!std::filesystem::exists(parts.path / "drop_final.ckpt"));
  CHECK(io::read_checkpoint(parts.path / "drop_resume.ckpt").find("trainer.total_steps")->int64s().front() == 13);
  DropNet reloaded(99);  // the step's weights: a plain state_dict of the network, loaded strictly
  io::load_state_dict(reloaded, parts.path / "drop_step13.ckpt");
  CHECK(std::memcmp(b.parameters().data(), reloaded.parameters().data(), b.num_parameters() * sizeof(float)) == 0);

  // --resume goes on from there to the uninterrupted run's very bytes.
  TrainerOptions rest = o;
  rest.resume = true;
  DropNet c(12345);
  Trainer<DropNet> resumed(c, rest);
  flag = 0;
  resumed.stop_when(flag);
  resumed.fit(train, log);
  CHECK(resumed.finished());
  CHECK(!resumed.interrupted());
  CHECK(resumed.stopped_weights().empty());
  CHECK(read_text(whole.path / "drop_final.ckpt") == read_text(parts.path / "drop_final.ckpt"));
  CHECK(read_text(whole.path / "drop_train_log.csv") == read_text(parts.path / "drop_train_log.csv"));

  // max_steps stops the same way (and names the reason).
  const TempDir smoke("ctnn_test_trainer_stop_smoke");
  o.out_dir = smoke.path;
  o.max_steps = 10;  // an epoch's end: its decay-free snapshot, then the weights
  DropNet d(1);
  Trainer<DropNet> short_run(d, o);
  std::ostringstream smoke_log;
  short_run.fit(train, smoke_log);
  CHECK(!short_run.interrupted());
  CHECK(!short_run.finished());
  CHECK(smoke_log.str().find("Stopped after step 10 of 30: max_steps reached") != std::string::npos);
  CHECK(std::filesystem::exists(smoke.path / "drop_step10.ckpt"));
  CHECK(io::read_checkpoint(smoke.path / "drop_resume.ckpt").find("trainer.epoch")->int64s().front() == 2);
}

TEST_CASE("Trainer: resume_with_lr replaces the snapshot's learning rate, scaled by the decays so far, and logs it") {
  const auto train = data::make_synthetic_cifar(200, 7);
  TrainerOptions o;
  o.epochs = 3;
  o.batch_size = 20;  // 10 steps per epoch
  o.lr = 1e-3;
  o.lr_decay_every = 1;
  o.lr_decay_factor = 2;
  o.checkpoint_every = 4;
  o.model_name = "drop";
  std::ostringstream log;
  const TempDir whole("ctnn_test_trainer_lr_whole");
  o.out_dir = whole.path;
  DropNet a(1);
  Trainer<DropNet>(a, o).fit(train, log);

  const TempDir dir("ctnn_test_trainer_lr");
  o.out_dir = dir.path;
  o.max_steps = 15;  // in epoch 2, after one decay: the snapshot's rate is 5e-4
  DropNet b(1);
  Trainer<DropNet>(b, o).fit(train, log);
  const TempDir same("ctnn_test_trainer_lr_same");  // the same stop, for a resume with the run's own rate
  std::filesystem::copy(dir.path, same.path, std::filesystem::copy_options::recursive);

  TrainerOptions lower = o;
  lower.max_steps = -1;
  lower.resume = true;
  lower.resume_with_lr = true;
  lower.lr = 1e-4;
  DropNet c(1);
  Trainer<DropNet> resumed(c, lower);
  std::ostringstream resumed_log;
  resumed.fit(train, resumed_log);
  INFO(resumed_log.str());
  CHECK(resumed_log.str().find("Learning rate lowered from 0.0005 to 5e-05 on resume (0.0001 divided by 2 at the "
                               "decay so far)") != std::string::npos);
  CHECK(resumed.optimizer().lr() == doctest::Approx(1e-4 / 8));  // and the later decays follow it
  // The loss log shows the rate every step used: the snapshot's up to step 15, the new one after.
  const std::string csv = read_text(dir.path / "drop_train_log.csv");
  CHECK(csv.find("\n2,5,") != std::string::npos);
  CHECK(csv.substr(csv.find("\n2,5,"), csv.find('\n', csv.find("\n2,5,") + 1) - csv.find("\n2,5,")).ends_with(",0.0005"));
  CHECK(csv.substr(csv.find("\n2,6,"), csv.find('\n', csv.find("\n2,6,") + 1) - csv.find("\n2,6,")).ends_with(",5e-05"));
  CHECK(read_text(whole.path / "drop_final.ckpt") != read_text(dir.path / "drop_final.ckpt"));

  // The run's own rate given again changes nothing: no line, and the uninterrupted run's bytes.
  TrainerOptions own = lower;
  own.out_dir = same.path;
  own.lr = 1e-3;
  DropNet d(1);
  std::ostringstream own_log;
  Trainer<DropNet>(d, own).fit(train, own_log);
  CHECK(own_log.str().find("Resuming from") != std::string::npos);
  CHECK(own_log.str().find("Learning rate") == std::string::npos);
  CHECK(read_text(whole.path / "drop_final.ckpt") == read_text(same.path / "drop_final.ckpt"));
}

TEST_CASE("Trainer: observers told of an epoch's end can read the whole epoch in the loss log") {
  const TempDir dir("ctnn_test_trainer_epoch_log");
  TrainerOptions o;
  o.epochs = 2;
  o.batch_size = 20;
  o.checkpoint_every = 0;
  o.out_dir = dir.path;
  o.model_name = "m";
  SmallNet net(0);
  Trainer<SmallNet> trainer(net, o);
  struct Reader : TrainingObserver {
    std::filesystem::path csv;
    std::vector<long> lines;
    void on_epoch_end(int) override {
      std::ifstream in(csv);
      long n = 0;
      for (std::string line; std::getline(in, line);) ++n;
      lines.push_back(n);
    }
  } reader;
  reader.csv = trainer.csv_path();
  trainer.add_observer(reader);
  std::ostringstream log;
  trainer.fit(data::make_synthetic_cifar(100, 1), log);
  CHECK(reader.lines == std::vector<long>{1 + 5, 1 + 10});  // the header and every step so far
}

TEST_CASE("Trainer with SGD and momentum: the snapshot holds the momentum buffer, --resume is bit-identical") {
  const auto train = data::make_synthetic_cifar(200, 7);
  TrainerOptions o;
  o.epochs = 2;
  o.batch_size = 20;  // 10 steps per epoch
  o.checkpoint_every = 4;
  o.model_name = "sgd";
  const SGD::Options sgd{.lr = 0.01, .momentum = 0.9};
  std::ostringstream log;

  const TempDir whole("ctnn_test_trainer_sgd_whole");
  o.out_dir = whole.path;
  DropNet a(1);
  Trainer<DropNet, SGD>(a, o, SGD(a, sgd)).fit(train, log);

  const TempDir parts("ctnn_test_trainer_sgd_parts");
  o.out_dir = parts.path;
  {
    DropNet b(1);
    TrainerOptions first = o;
    first.max_steps = 13;  // stops in the middle of epoch 2
    Trainer<DropNet, SGD>(b, first, SGD(b, sgd)).fit(train, log);
  }
  const io::StateDict snapshot = io::read_checkpoint(parts.path / "sgd_resume.ckpt");
  REQUIRE(snapshot.contains("optimizer.momentum_buffer"));
  CHECK(snapshot.at("optimizer.momentum_buffer").numel() == a.num_parameters());
  CHECK(snapshot.at("optimizer.step").int64s() == std::vector<std::int64_t>{13});
  DropNet c(12345);
  TrainerOptions rest = o;
  rest.resume = true;
  Trainer<DropNet, SGD> resumed(c, rest, SGD(c, sgd));
  resumed.fit(train, log);
  CHECK(resumed.optimizer().steps() == 20);
  CHECK(std::memcmp(a.parameters().data(), c.parameters().data(), a.num_parameters() * sizeof(float)) == 0);
  CHECK(read_text(whole.path / "sgd_final.ckpt") == read_text(parts.path / "sgd_final.ckpt"));

  // The snapshot resumed with another optimizer: refused, before the network changes.
  DropNet d(777);
  const std::vector<float> before(d.parameters().begin(), d.parameters().end());
  CHECK_THROWS_WITH_AS(Trainer<DropNet>(d, rest).fit(train, log),
                       doctest::Contains("holds the state of another optimizer than this run's (entries "
                                         "optimizer.lr_bits, optimizer.momentum_buffer, optimizer.step; this optimizer "
                                         "keeps optimizer.exp_avg, optimizer.exp_avg_sq, optimizer.lr_bits, optimizer.step)"),
                       io::CheckpointError);
  using SgdTrainer = Trainer<DropNet, SGD>;  // (a macro argument takes no bare template comma)
  CHECK_THROWS_AS(SgdTrainer(d, rest, SGD(d, {.lr = 0.01})).fit(train, log), io::CheckpointError);  // no momentum
  // The same optimizer with other options: the snapshot keeps them (optimizer_options.*), as
  // PyTorch's optimizer state_dict keeps its param_groups, and a resume with others is refused.
  CHECK(snapshot.at("optimizer_options.momentum_bits").int64s() == std::vector<std::int64_t>{std::bit_cast<std::int64_t>(0.9)});
  CHECK_THROWS_WITH_AS(SgdTrainer(d, rest, SGD(d, {.lr = 0.01, .momentum = 0.5})).fit(train, log),
                       doctest::Contains("sgd_resume.ckpt: was written by a run whose optimizer had momentum = 0.9; "
                                         "this run's has 0.5: resume with the same optimizer options"),
                       io::CheckpointError);
  CHECK_THROWS_WITH_AS(SgdTrainer(d, rest, SGD(d, {.lr = 0.01, .momentum = 0.9, .nesterov = true})).fit(train, log),
                       doctest::Contains("had nesterov = 0; this run's has 1"), io::CheckpointError);
  CHECK_THROWS_WITH_AS(SgdTrainer(d, rest, SGD(d, {.lr = 0.01, .momentum = 0.9, .weight_decay = 1e-4})).fit(train, log),
                       doctest::Contains("had weight_decay = 0; this run's has 0.0001"), io::CheckpointError);
  CHECK(std::equal(before.begin(), before.end(), d.parameters().begin(), d.parameters().end()));
  // Keys from the file are quoted printably in that message (a control character in a crafted one).
  io::StateDict crafted = snapshot;
  crafted.insert_or_assign("optimizer.\x01odd", io::Tensor::scalar_int64(1));
  io::write_checkpoint(parts.path / "sgd_resume.ckpt", crafted);
  CHECK_THROWS_WITH_AS(SgdTrainer(d, rest, SGD(d, sgd)).fit(train, log),
                       doctest::Contains("entries optimizer.\\x01odd, optimizer.lr_bits"), io::CheckpointError);
}

// Numerical faults. Poison is the identity, except that it puts a NaN into its output at one
// chosen forward call, or into its input gradient at one chosen backward call (1-based; 0 never).
namespace {
int poison_forward_at = 0, poison_backward_at = 0;

template <class In>
class PoisonLayer : public LeafLayer<PoisonLayer<In>, In, In> {
 public:
  static std::string type_name() { return "Poison()"; }
  const Batch<In>& forward(const Batch<In>& x) {
    this->y_ = x;
    if (++forwards_ == poison_forward_at) this->y_.data()[x.size() / 2] = std::numeric_limits<float>::quiet_NaN();
    return this->y_;
  }
  void backward(const Batch<In>& x, const Batch<In>& dy, Batch<In>* dx) {
    if (!dx) return;
    dx->resize(x.batch());
    std::copy(dy.data(), dy.data() + dy.size(), dx->data());
    if (++backwards_ == poison_backward_at) dx->data()[0] = std::numeric_limits<float>::infinity();
  }

 private:
  int forwards_ = 0, backwards_ = 0;
};
struct Poison {
  template <class In>
  using bind = PoisonLayer<In>;
};

// Keys: 0 conv, 1 bn, 2 relu, 3 pool, 4 conv, 5 relu, 6 pool, 7 flatten, 8 poison, 9 linear.
using PoisonNet = Network<Shape<3, 32, 32>, Sequential<Conv2d<3, 8, 3, 1, 1>, BatchNorm2d<8>, ReLU, MaxPool2d<4>,
                                                       Conv2d<8, 16, 3, 1, 1>, ReLU, MaxPool2d<8>, Flatten, Poison,
                                                       Linear<16, 10>>>;

struct PoisonRun {
  TempDir dir{"ctnn_test_trainer_nan"};
  TrainerOptions o;
  PoisonRun() {
    o.batch_size = 20;  // 10 steps per epoch
    o.checkpoint_every = 3;
    o.model_name = "p";
    o.out_dir = dir.path;
  }
  std::filesystem::path resume() const { return dir.path / "p_resume.ckpt"; }
  std::vector<std::string> files() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir.path)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

// The resume snapshot an unpoisoned run leaves after `steps` steps.
std::string clean_snapshot(const data::Dataset& train, long steps) {
  poison_forward_at = poison_backward_at = 0;
  PoisonRun clean;
  clean.o.max_steps = steps;
  PoisonNet net(3);
  std::ostringstream log;
  Trainer<PoisonNet>(net, clean.o).fit(train, log);
  return read_text(clean.resume());
}
}  // namespace

TEST_CASE("Trainer: a NaN loss stops training, naming the step and the layer; the last good checkpoint stays") {
  const auto train = data::make_synthetic_cifar(200, 7);
  const std::string good = clean_snapshot(train, 6);

  PoisonRun run;
  PoisonNet net(3);
  poison_forward_at = 7;  // step 7: after the snapshots of steps 3 and 6
  std::ostringstream log;
  Trainer<PoisonNet> trainer(net, run.o);
  try {
    trainer.fit(train, log);
    FAIL("no NumericalError");
  } catch (const NumericalError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(e.step == 7);
    CHECK(e.layer == "8");
    CHECK(msg.find("step 7 (epoch 1, batch 7 of 10): loss is NaN; first non-finite value (NaN) in the output of 8 "
                   "(Poison); stopped before the optimizer step: the last good checkpoint is ") == 0);
    CHECK(msg.find("p_resume.ckpt (after step 6)") != std::string::npos);
  }
  poison_forward_at = 0;
  CHECK(trainer.optimizer().steps() == 6);  // the optimizer never saw step 7
  CHECK(read_text(run.resume()) == good);   // byte for byte the snapshot of step 6
  CHECK(run.files() == std::vector<std::string>{"p_resume.ckpt", "p_train_log.csv"});
}

TEST_CASE("Trainer: a non-finite gradient stops training before the optimizer step, naming the layer") {
  const auto train = data::make_synthetic_cifar(200, 7);
  const std::string good = clean_snapshot(train, 3);

  PoisonRun run;
  PoisonNet net(3);
  poison_backward_at = 5;
  std::ostringstream log;
  Trainer<PoisonNet> trainer(net, run.o);
  try {
    trainer.fit(train, log);
    FAIL("no NumericalError");
  } catch (const NumericalError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(e.step == 5);
    // The infinity enters at 8's input gradient; 7 and 6 have no parameters, 4 is the first
    // layer whose gradient shows it (the Linear after the poison, 9, is clean).
    CHECK(e.layer == "4");
    CHECK(msg.find("step 5 (epoch 1, batch 5 of 10): gradient is ") == 0);
    CHECK(msg.find("(the loss, ") != std::string::npos);
    CHECK(msg.find("first non-finite gradient going back from the loss in 4 (Conv2d): the gradient of its weight "
                   "holds") != std::string::npos);
    CHECK(msg.find("the last good checkpoint is ") != std::string::npos);
  }
  poison_backward_at = 0;
  CHECK(trainer.optimizer().steps() == 4);
  CHECK(all_finite(net.parameters()));  // no update from the bad gradient
  CHECK(read_text(run.resume()) == good);
}

TEST_CASE("Trainer: a poisoned weight is named with its layer by its state_dict key (VGG16)") {
  const auto train = data::make_synthetic_cifar(4, 7);
  VGG16 net(0);
  const auto& entries = net.state_entries();
  const auto it =
      std::find_if(entries.begin(), entries.end(), [](const StateEntry& e) { return e.name == "features.7.weight"; });
  REQUIRE(it != entries.end());
  net.parameters()[it->offset + 5] = std::numeric_limits<float>::infinity();
  TrainerOptions o;
  o.batch_size = 2;
  std::ostringstream log;
  Trainer<VGG16> trainer(net, o);
  try {
    trainer.fit(train, log);
    FAIL("no NumericalError");
  } catch (const NumericalError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(e.layer == "features.7");
    CHECK(msg.find("step 1 (epoch 1, batch 1 of 2): loss is NaN; first non-finite value (") == 0);
    CHECK(msg.find(") in the output of features.7 (Conv2d); its weight holds inf already; stopped before the optimizer "
                   "step") != std::string::npos);
  }
}

TEST_CASE("Trainer: a learning rate that blows the weights up stops with a NumericalError, checkpoints intact") {
  const auto train = data::make_synthetic_cifar(200, 7);
  PoisonRun run;
  run.o.lr = 1e36;
  run.o.checkpoint_every = 1;
  poison_forward_at = poison_backward_at = 0;
  PoisonNet net(3);
  std::ostringstream log;
  Trainer<PoisonNet> trainer(net, run.o);
  std::string msg;
  long step = 0;
  try {
    trainer.fit(train, log);
  } catch (const NumericalError& e) {
    msg = e.what();
    step = e.step;
  }
  INFO(msg);
  REQUIRE(!msg.empty());
  // Step 1 turns the weights into finite ~1e36 values, which are saved; the NaN comes after.
  CHECK(step >= 2);
  CHECK(msg.find("the last good checkpoint is " + run.resume().string()) != std::string::npos);
  // What was saved holds finite weights only and loads.
  REQUIRE(std::filesystem::exists(run.resume()));
  PoisonNet reloaded(9);
  io::StateDict model;
  for (const auto& [key, t] : io::read_checkpoint(run.resume()))
    if (key.rfind("model.", 0) == 0) model.insert_or_assign(key.substr(6), t);
  io::load_state_dict(reloaded, model);
  CHECK(all_finite(reloaded.parameters()));
}

TEST_CASE("Trainer removes the temporary files of saves killed half-way, and only those") {
  const TempDir dir("ctnn_test_trainer_temps");
  const pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);  // now a process id that no longer exists
  const std::string dead = std::to_string(child), self = std::to_string(getpid());
  auto touch = [&](const std::string& name) { std::ofstream(dir.path / name) << "partial"; };
  touch(".m_resume.ckpt.tmp-" + dead + "-0-123");   // a killed save
  touch(".m_final.ckpt.tmp-" + self + "-7-456");    // this process id, but no write of ours
  touch(".m_resume.ckpt.tmp-1-0-789");              // pid 1 is alive: may be writing
  touch(".other_resume.ckpt.tmp-" + dead + "-0-1"); // another model's
  TrainerOptions o;
  o.out_dir = dir.path;
  o.model_name = "m";
  o.batch_size = 20;
  o.max_steps = 1;
  SmallNet net(0);
  std::ostringstream log;
  Trainer<SmallNet>(net, o).fit(data::make_synthetic_cifar(40, 1), log);
  CHECK(log.str().find(".m_resume.ckpt.tmp-" + dead + "-0-123 (left by an interrupted save)") != std::string::npos);
  CHECK(!std::filesystem::exists(dir.path / (".m_resume.ckpt.tmp-" + dead + "-0-123")));
  CHECK(!std::filesystem::exists(dir.path / (".m_final.ckpt.tmp-" + self + "-7-456")));
  CHECK(std::filesystem::exists(dir.path / ".m_resume.ckpt.tmp-1-0-789"));
  CHECK(std::filesystem::exists(dir.path / (".other_resume.ckpt.tmp-" + dead + "-0-1")));
}

TEST_CASE("all_finite sees every NaN and infinity, at any position") {
  std::vector<float> v(1u << 19, 1.0f);
  CHECK(all_finite(v));
  for (std::size_t at : {std::size_t{0}, std::size_t{12345}, v.size() - 1}) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      v[at] = bad;
      CHECK(!all_finite(v));
      CHECK(!all_finite(std::span<const float>(v).subspan(at, 1)));
    }
    v[at] = std::numeric_limits<float>::max();
    CHECK(all_finite(v));
  }
}

TEST_CASE("Trainer: a stop request during the run's last step leaves a finished run, not an interrupted one") {
  const auto train = data::make_synthetic_cifar(200, 7);
  const TempDir dir("ctnn_test_trainer_stop_last");
  TrainerOptions o = three_short_epochs();
  o.out_dir = dir.path;
  std::atomic<int> flag{0};
  SignalAtStep signaller(flag, 30, SIGINT);
  DropNet net(1);
  Trainer<DropNet> trainer(net, o);
  trainer.add_observer(signaller);
  trainer.stop_when(flag);
  std::ostringstream log;
  trainer.fit(train, log);
  CHECK(trainer.finished());
  CHECK_FALSE(trainer.interrupted());  // ctnn-train took it for a stopped run: no evaluation, exit 130
  CHECK(trainer.stopped_weights().empty());
  CHECK(std::filesystem::exists(dir.path / "drop_final.ckpt"));
}

TEST_CASE("Trainer: a new run removes an earlier run's snapshot; a loss log short of the snapshot is said") {
  const auto train = data::make_synthetic_cifar(200, 7);
  const TempDir dir("ctnn_test_trainer_new_run");
  TrainerOptions o = three_short_epochs();
  o.out_dir = dir.path;
  o.max_steps = 12;  // run A: a snapshot after step 12
  std::ostringstream log;
  {
    DropNet a(1);
    Trainer<DropNet>(a, o).fit(train, log);
  }
  const auto snapshot = dir.path / "drop_resume.ckpt", csv = dir.path / "drop_train_log.csv";
  REQUIRE(std::filesystem::exists(snapshot));
  // Run B in the same folder, with another rate: A's snapshot must be gone as soon as B starts,
  // since B's log replaces A's (left there, a --resume after B was killed before its own first
  // snapshot continued A under B's log, steps 1-12 missing). B writes no snapshot until it stops.
  TrainerOptions b = o;
  b.lr = 0.01;
  b.max_steps = 2;
  b.checkpoint_every = 0;
  struct Probe : TrainingObserver {
    std::filesystem::path file;
    bool present = true;
    void on_step(const StepReport&) override { present = std::filesystem::exists(file); }
  } probe;
  probe.file = snapshot;
  std::ostringstream b_log;
  {
    DropNet net(1);
    Trainer<DropNet> trainer(net, b);
    trainer.add_observer(probe);
    trainer.fit(train, b_log);
  }
  CHECK_FALSE(probe.present);
  CHECK(b_log.str().find("Removed " + snapshot.string() + ", an earlier run's snapshot") != std::string::npos);

  // A log that lost rows the snapshot counts (B's snapshot after 2 steps, a log of 1 row): said.
  std::string rows = read_text(csv);
  REQUIRE(std::count(rows.begin(), rows.end(), '\n') == 3);
  rows.erase(rows.find('\n', rows.find('\n') + 1) + 1);  // the header and step 1
  std::ofstream(csv) << rows;
  TrainerOptions more = b;
  more.resume = true;
  more.max_steps = 3;
  std::ostringstream resume_log;
  DropNet c(5);
  Trainer<DropNet>(c, more).fit(train, resume_log);
  CHECK(resume_log.str().find("warning: " + csv.string() + " holds 1 step rows, and the snapshot was taken after 2 "
                              "steps: the log's rows go on from step 3") != std::string::npos);
}

TEST_CASE("Trainer with replicas: a process whose share of the batch stayed finite says another's did not") {
  // Process 0 of 2, whose own share is finite, while the other process's share made the summed
  // loss NaN: "every layer's output is finite: the loss itself overflowed" was wrong there.
  struct OtherShareNaN : Replicas {
    int rank() const override { return 0; }
    int size() const override { return 2; }
    BatchShard shard(const data::LoaderBatch&) const override { return {}; }
    void sum(std::span<float>) const override {}
    double sum(double value) const override { return value + std::numeric_limits<double>::quiet_NaN(); }
    void broadcast(std::vector<std::uint8_t>&) const override {}
    void require_same(const std::string&) const override {}
  } replicas;
  TrainerOptions o;
  o.batch_size = 20;
  SmallNet net(0);
  Trainer<SmallNet> trainer(net, o);
  trainer.set_replicas(replicas);
  std::ostringstream log;
  CHECK_THROWS_WITH_AS(trainer.fit(data::make_synthetic_cifar(40, 3), log),
                       doctest::Contains("step 1 (epoch 1, batch 1 of 2): loss is NaN; this process's share of the batch "
                                         "gave finite outputs and a finite loss: another process's share did not"),
                       NumericalError);
}
