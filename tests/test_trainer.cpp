// The assignment's training loop as a library piece: logging, learning-rate decay, early stop,
// evaluation, on small SYNTHETIC data sets generated here.
#include "support/check.hpp"

#include <ctnn/train/trainer.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "support/temp_dir.hpp"

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
  o.csv = tmp.path / "log.csv";
  Trainer<SmallNet> trainer(net, o);
  std::vector<int> epochs_seen;
  trainer.on_epoch_end = [&](int e) { epochs_seen.push_back(e); };
  std::ostringstream log;
  trainer.fit(train, log);
  CHECK(epochs_seen == std::vector<int>{1, 2});
  CHECK(log.str().find("Epoch [1/2], Step [4/20] Loss: ") != std::string::npos);
  CHECK(log.str().find("Epoch [2/2], Step [20/20] Loss: ") != std::string::npos);

  std::ifstream csv(o.csv);
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
