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
#include <cstring>

using namespace ctnn;
using namespace ctnn::test;

namespace {
using SmallNet = Network<Shape<3, 32, 32>, Sequential<Conv2d<3, 8, 3, 1, 1>, BatchNorm2d<8>, ReLU, MaxPool2d<4>,
                                                      Conv2d<8, 16, 3, 1, 1>, ReLU, MaxPool2d<8>, Flatten,
                                                      Linear<16, 10>>>;
}  // namespace

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
  std::vector<int> epochs_seen;
  trainer.on_epoch_end = [&](int e) { epochs_seen.push_back(e); };
  std::ostringstream log;
  trainer.fit(train, log);
  CHECK(epochs_seen == std::vector<int>{1, 2});
  CHECK(log.str().find("Epoch [1/2], Step [4/20] Loss: ") != std::string::npos);
  CHECK(log.str().find("Epoch [2/2], Step [20/20] Loss: ") != std::string::npos);

  std::ifstream csv(trainer.csv_path());
  std::string header, line, last;
  std::getline(csv, header);
  CHECK(header == "epoch,step,loss,running_loss,lr");
  std::getline(csv, line);
  const double first_loss = std::stod(line.substr(line.find(',', 2) + 1));
  int rows = 1;
  while (std::getline(csv, line)) {
    last = line;
    ++rows;
  }
  CHECK(rows == 40);
  const double last_loss = std::stod(last.substr(last.find(',', 2) + 1));
  INFO("loss " << first_loss << " -> " << last_loss);
  CHECK(last_loss < 0.5 * first_loss);

  const auto r = evaluate(net, test);
  CHECK(r.total == 200);
  long sum = 0;
  for (const auto& row : r.confusion)
    for (long v : row) sum += v;
  CHECK(sum == 200);
  INFO("accuracy " << r.accuracy());
  CHECK(r.accuracy() > 50.0);  // chance is 10%
  CHECK(net.is_training());    // evaluate restores the mode it found
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

TEST_CASE("Trainer rejects impossible options") {
  SmallNet net(0);
  TrainerOptions o;
  o.epochs = 0;
  CHECK_THROWS_AS(Trainer<SmallNet>(net, o), std::invalid_argument);
  o.epochs = 1;
  o.batch_size = 0;
  CHECK_THROWS_AS(Trainer<SmallNet>(net, o), std::invalid_argument);
}

namespace {
using DropNet = Network<Shape<3, 32, 32>, Sequential<Conv2d<3, 8, 3, 1, 1>, BatchNorm2d<8>, ReLU, MaxPool2d<4>,
                                                     Conv2d<8, 16, 3, 1, 1>, ReLU, MaxPool2d<8>, Flatten,
                                                     Dropout<0.5>, Linear<16, 10>>>;

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

TEST_CASE("Trainer writes main.py's checkpoints, and --resume after a stop gives bit-identical weights") {
  const auto train = data::make_synthetic_cifar(200, 7);
  TrainerOptions o;
  o.epochs = 3;
  o.batch_size = 20;  // 10 steps per epoch
  o.lr_decay_every = 2;
  o.checkpoint_every = 4;
  o.model_name = "drop";
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
    Trainer<DropNet>(b, first).fit(train, log);
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

