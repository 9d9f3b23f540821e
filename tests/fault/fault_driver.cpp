// fault_driver: kills a training run with SIGKILL at chosen points (mid-step, half-way through a
// checkpoint save, between a save and its rename) and at random instants, resumes it with
// --resume until it finishes, and checks that
//   - after every kill, every *.ckpt in the output directory loads completely and has the
//     reference run's keys, shapes and dtypes, the resume snapshot never goes back in time,
//     and the only other files are the loss log and temporary files (".<name>.tmp-..."), which
//     nothing loads;
//   - the kill points that target a save really left a temporary file behind (so the test is
//     testing what it claims);
//   - the finished run's files (every checkpoint, the loss log) are byte for byte those of an
//     uninterrupted run, its accuracy line is the same, and no temporary file is left.
// and, with damage:KIND scenarios, that --resume refuses a damaged resume snapshot with exit
// status 1 and a message naming the file and the problem, changing no file; and, with term:N and
// int:N, that SIGTERM or SIGINT arriving in the middle of the N-th step (CTNN_FAULT_SIGNAL) stops
// the run gracefully: exit status 130, the step finished, its snapshot and <model>_step<N>.ckpt
// (the snapshot's weights, as a state_dict) saved, no temporary file left, and a resumed run
// still ends byte for byte as the uninterrupted one.
//
//   fault_driver --train BIN --model NAME --work DIR [--scenario SPEC]... [--seed S] -- ARGS...
//
// ARGS are the training options (everything but --model, --out and --resume). A SPEC is a
// comma-separated list of the kills of one scenario, one per process, then the run is resumed
// to the end: step:N, write:N[:BYTES|:half], rename:N (CTNN_FAULT_KILL_AT points, see
// tests/fault/kill_hook.hpp; `half` is half the size of the reference's resume snapshot),
// term:N or int:N (SIGTERM or SIGINT at step:N instead of SIGKILL: a graceful stop), or
// random[*K] (K kills at random instants within the reference run's duration). The random
// instants come from the seed, printed first; CTNN_FAULT_SEED=S repeats a run. damage:KIND
// stops a run after 5 steps, damages its snapshot and resumes: KIND is truncate (half the file),
// empty, flip (one byte in a tensor), plain (a plain state_dict, not a snapshot), keys (a
// snapshot with one model key renamed) or batch (resumed with another --batch-size).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <ctnn/io/torch_checkpoint.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string train, model;
  fs::path work;
  std::vector<std::string> scenarios, train_args;
  std::uint64_t seed = 0;
  bool seed_given = false;
};

struct Outcome {
  bool killed = false;  // by SIGKILL
  int status = 0;       // exit status when not killed; the signal when signalled
  bool signalled = false;
  double seconds = 0;
  std::string output;  // stdout and stderr
};

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs the trainer into `out`, with CTNN_FAULT_KILL_AT=fault if not empty; kills it with SIGKILL
// after `kill_after` seconds if that is >= 0 and it is still running.
// With `signal` (TERM or INT) the fault point sends that signal instead of SIGKILL.
Outcome run(const Options& o, const fs::path& out, bool resume, const std::string& fault, double kill_after,
            const fs::path& log, double timeout, const std::string& signal = "") {
  std::vector<std::string> args{o.train, "--model", o.model, "--out", out.string()};
  args.insert(args.end(), o.train_args.begin(), o.train_args.end());
  if (resume) args.push_back("--resume");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  const auto start = Clock::now();
  const pid_t pid = fork();
  if (pid < 0) throw Failure("fork failed");
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    if (fault.empty())
      ::unsetenv("CTNN_FAULT_KILL_AT");
    else
      ::setenv("CTNN_FAULT_KILL_AT", fault.c_str(), 1);
    if (signal.empty())
      ::unsetenv("CTNN_FAULT_SIGNAL");
    else
      ::setenv("CTNN_FAULT_SIGNAL", signal.c_str(), 1);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int st = 0;
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  for (;;) {
    const pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (r < 0) throw Failure("waitpid failed");
    const double t = elapsed();
    if ((kill_after >= 0 && t >= kill_after) || t > timeout) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      if (kill_after < 0 || t < kill_after)
        throw Failure("the trainer did not finish within " + std::to_string(timeout) + " s");
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  Outcome r;
  r.seconds = elapsed();
  r.signalled = WIFSIGNALED(st);
  r.status = r.signalled ? WTERMSIG(st) : WEXITSTATUS(st);
  r.killed = r.signalled && r.status == SIGKILL;
  r.output = read_all(log);
  return r;
}

bool is_temp(const std::string& leaf) {
  return !leaf.empty() && leaf[0] == '.' && leaf.find(".tmp-") != std::string::npos;
}
bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
// <model>_step<N>.ckpt: the weights a stopped run leaves (not in an uninterrupted run's files).
bool is_step_weights(const std::string& leaf, const std::string& model) {
  const std::string head = model + "_step", tail = ".ckpt";
  if (leaf.size() <= head.size() + tail.size() || leaf.rfind(head, 0) != 0 || !ends_with(leaf, tail)) return false;
  const std::string n = leaf.substr(head.size(), leaf.size() - head.size() - tail.size());
  return n.find_first_not_of("0123456789") == std::string::npos;
}

// "key float32 [3, 4]" lines: what a checkpoint holds, without the values.
std::string layout(const ctnn::io::StateDict& sd) {
  std::string s;
  for (const auto& [key, t] : sd)
    s += key + " " + ctnn::io::dtype_name(t.dtype()) + " " + ctnn::io::shape_string(t.shape()) + "\n";
  return s;
}

std::string accuracy_line(const std::string& output) {
  const auto at = output.find("Accuracy of the model on the test images: ");
  return at == std::string::npos ? std::string() : output.substr(at, output.find('\n', at) - at);
}

struct Reference {
  std::map<std::string, std::string> files;    // name -> bytes
  std::map<std::string, std::string> layouts;  // checkpoint name -> layout()
  std::string accuracy;
  double seconds = 0;
  long steps = 1;  // in the whole run
};

class Driver {
 public:
  explicit Driver(Options o) : o_(std::move(o)), rng_(o_.seed) {}

  void reference() {
    const fs::path dir = o_.work / "reference";
    fs::create_directories(dir);
    const Outcome r = run(o_, dir, false, "", -1, o_.work / "reference.log", 600);
    if (r.signalled || r.status != 0) throw Failure("the uninterrupted run failed:\n" + r.output);
    ref_.seconds = r.seconds;
    ref_.accuracy = accuracy_line(r.output);
    if (ref_.accuracy.empty()) throw Failure("the uninterrupted run printed no accuracy line:\n" + r.output);
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string leaf = e.path().filename().string();
      ref_.files[leaf] = read_all(e.path());
      if (ends_with(leaf, ".ckpt")) ref_.layouts[leaf] = layout(ctnn::io::read_checkpoint(e.path()));
    }
    if (!ref_.files.count(resume_name())) throw Failure("the uninterrupted run wrote no " + resume_name());
    ref_.steps =
        std::max(1L, static_cast<long>(
                         ctnn::io::read_checkpoint(dir / resume_name()).find("trainer.total_steps")->int64s().front()));
    std::cout << "reference: " << r.seconds << " s, files:";
    for (const auto& [leaf, bytes] : ref_.files) std::cout << " " << leaf << " (" << bytes.size() << " B)";
    std::cout << "\n  " << ref_.accuracy << std::endl;
  }

  // One scenario: the kills of `spec` in successive processes, then a run to the end.
  void scenario(const std::string& spec) {
    if (spec.rfind("damage:", 0) == 0) return damage(spec.substr(7));
    std::vector<std::string> kills;
    std::stringstream ss(spec);
    for (std::string item; std::getline(ss, item, ',');) {
      const auto star = item.find('*');
      const int times = star == std::string::npos ? 1 : std::stoi(item.substr(star + 1));
      for (int i = 0; i < times; ++i) kills.push_back(item.substr(0, star));
    }
    std::string name = spec;
    for (char& c : name)
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    const fs::path dir = o_.work / name;
    fs::create_directories(dir);
    std::cout << "scenario " << spec << std::endl;
    long last_step = -1;
    int attempt = 0;
    for (std::string kill : kills) {
      ++attempt;
      const fs::path log = o_.work / (name + "." + std::to_string(attempt) + ".log");
      std::string fault, signal;
      double after = -1;
      if (kill.rfind("term:", 0) == 0 || kill.rfind("int:", 0) == 0) {
        signal = kill.substr(0, kill.find(':')) == "term" ? "TERM" : "INT";
        fault = "step:" + kill.substr(kill.find(':') + 1);
      } else if (kill == "random") {
        // Within what is left of the run: the reference's time scaled by the steps still to
        // train (at least a quarter of it, for the start-up, the evaluation and the saves).
        const double left =
            last_step < 0 ? 1.0 : 1.0 - static_cast<double>(last_step) / static_cast<double>(ref_.steps);
        after = std::uniform_real_distribution<double>(0.0, ref_.seconds * std::max(0.25, left))(rng_);
      } else {
        fault = kill;
        if (ends_with(fault, ":half"))
          fault = fault.substr(0, fault.size() - 4) + std::to_string(ref_.files[resume_name()].size() / 2);
      }
      const Outcome r = run(o_, dir, true, fault, after, log, 600, signal);
      std::cout << "  " << attempt << ". "
                << (fault.empty() ? "kill after " + std::to_string(after) + " s" : "CTNN_FAULT_KILL_AT=" + fault)
                << (signal.empty() ? "" : " CTNN_FAULT_SIGNAL=" + signal) << ": ";
      if (!signal.empty()) {
        std::cout << check_after_stop(dir, r, signal, std::stol(fault.substr(5)), last_step) << std::endl;
        continue;
      }
      if (!r.killed) {
        if (r.signalled || r.status != 0) throw Failure("the run failed instead of being killed:\n" + r.output);
        if (!fault.empty()) throw Failure("the run never reached " + fault + " (it finished):\n" + r.output);
        std::cout << "finished before the kill (" << r.seconds << " s)" << std::endl;
        continue;
      }
      std::cout << "killed after " << r.seconds << " s; " << check_after_kill(dir, kill, last_step) << std::endl;
    }
    const Outcome r = run(o_, dir, true, "", -1, o_.work / (name + ".final.log"), 600);
    if (r.signalled || r.status != 0) throw Failure("the resumed run failed:\n" + r.output);
    if (last_step >= 0 && r.output.find("Resuming from " + (dir / resume_name()).string()) == std::string::npos)
      throw Failure("the resumed run did not resume from " + resume_name() + ":\n" + r.output);
    compare_with_reference(dir, r);
    std::cout << "  resumed to the end (" << r.seconds << " s): every file byte-identical to the uninterrupted run's"
              << std::endl;
  }

 private:
  // The files' stem: the model's name, with "_synthetic" for a run on --synthetic data.
  std::string stem() const {
    const bool synthetic = std::find(o_.train_args.begin(), o_.train_args.end(), "--synthetic") != o_.train_args.end();
    return o_.model + (synthetic ? "_synthetic" : "");
  }
  std::string resume_name() const { return stem() + "_resume.ckpt"; }

  std::map<std::string, std::string> contents(const fs::path& dir) {
    std::map<std::string, std::string> files;
    for (const auto& e : fs::directory_iterator(dir)) files[e.path().filename().string()] = read_all(e.path());
    return files;
  }

  void damage(const std::string& kind) {
    static const std::map<std::string, std::string> expected = {
        {"truncate", "truncated or not a zip archive"},
        {"empty", "empty file"},
        {"flip", "is corrupt: its CRC-32 is"},
        {"plain", "not a ctnn resume checkpoint: no int64 entry 'trainer.seed'"},
        {"keys", "the checkpoint does not match the network's state_dict"},
        {"batch", "resume with the same --seed and --batch-size"},
        {"data", "resume on the same data set"}};
    const auto want = expected.find(kind);
    if (want == expected.end()) throw Failure("unknown damage " + kind);
    const fs::path dir = o_.work / ("damage_" + kind);
    fs::create_directories(dir);
    Options first = o_;
    first.train_args.insert(first.train_args.end(), {"--max-steps", "5"});
    const Outcome r0 = run(first, dir, false, "", -1, o_.work / ("damage_" + kind + ".0.log"), 600);
    if (r0.signalled || r0.status != 0) throw Failure("the first 5 steps failed:\n" + r0.output);
    const fs::path snap = dir / resume_name();
    const std::string bytes = read_all(snap);
    auto write = [&](const std::string& b) { std::ofstream(snap, std::ios::binary | std::ios::trunc) << b; };
    Options again = o_;
    if (kind == "truncate") write(bytes.substr(0, bytes.size() / 2));
    if (kind == "empty") write("");
    if (kind == "flip") {
      std::string b = bytes;
      b[b.size() / 2] = static_cast<char>(b[b.size() / 2] ^ 0x5a);
      write(b);
    }
    if (kind == "plain") write(ref_.files.at(stem() + "_final.ckpt"));
    if (kind == "keys") {
      ctnn::io::StateDict sd, renamed;
      sd = ctnn::io::read_checkpoint(snap);
      bool done = false;
      for (const auto& [key, t] : sd) {
        const bool hit = !done && key.rfind("model.", 0) == 0;
        renamed.insert_or_assign(hit ? "model.renamed." + key.substr(6) : key, t);
        done |= hit;
      }
      ctnn::io::write_checkpoint(snap, renamed);
    }
    if (kind == "batch") {  // (an option's value replaced: the programs refuse one given twice)
      const auto b = std::find(again.train_args.begin(), again.train_args.end(), "--batch-size");
      if (b != again.train_args.end() && b + 1 != again.train_args.end())
        *(b + 1) = std::to_string(std::stoi(*(b + 1)) + 1);
      else
        again.train_args.insert(again.train_args.end(), {"--batch-size", "101"});
    }
    if (kind == "data") {  // a training set of another size
      const auto s = std::find(again.train_args.begin(), again.train_args.end(), "--synthetic");
      if (s == again.train_args.end() || s + 1 == again.train_args.end()) throw Failure("damage:data needs --synthetic");
      *(s + 1) = std::to_string(std::stoi(*(s + 1)) / 2);
    }
    const auto before = contents(dir);
    const Outcome r = run(again, dir, true, "", -1, o_.work / ("damage_" + kind + ".log"), 600);
    const auto said = r.output.find(fs::path(o_.train).filename().string() + ": ");
    std::cout << "damage:" << kind << ": exit " << r.status << (r.signalled ? " (signal)" : "") << ", "
              << r.output.substr(said == std::string::npos ? 0 : said);
    if (r.signalled || r.status != 1) throw Failure("--resume with a damaged snapshot did not exit with status 1");
    if (r.output.find(snap.string()) == std::string::npos || r.output.find(want->second) == std::string::npos)
      throw Failure("the message does not name " + snap.string() + " and '" + want->second + "'");
    if (contents(dir) != before) throw Failure("the failed --resume changed files in " + dir.string());
  }

  // A graceful stop by SIG`signal` in the middle of this process's `nth` step (the process resumed
  // from the snapshot at `last_step`, or started afresh): exit status 130, the step finished and
  // saved, the weights so far as <model>_step<N>.ckpt equal to the snapshot's, no temporary file.
  std::string check_after_stop(const fs::path& dir, const Outcome& r, const std::string& signal, long nth,
                               long& last_step) {
    const long step = std::max(last_step, 0L) + nth;
    if (r.signalled || r.status != 130)
      throw Failure("SIG" + signal + " in step " + std::to_string(step) + " did not end the run with exit status 130 (" +
                    (r.signalled ? "signal " : "status ") + std::to_string(r.status) + "):\n" + r.output);
    const std::string weights = stem() + "_step" + std::to_string(step) + ".ckpt";
    for (const std::string& said : {"Stopped after step " + std::to_string(step) + " of " +
                                       std::to_string(ref_.steps) + ": SIG" + signal + " received",
                                   "Weights after step " + std::to_string(step) + ": " + (dir / weights).string()})
      if (r.output.find(said) == std::string::npos) throw Failure("the stopped run did not say '" + said + "':\n" + r.output);
    if (r.output.find("Accuracy of the model") != std::string::npos)
      throw Failure("the stopped run went on to evaluate:\n" + r.output);
    check_after_kill(dir, "stop", last_step);  // everything loads; the snapshot did not go back
    if (last_step != step)
      throw Failure("after the stop in step " + std::to_string(step) + " the snapshot is at step " +
                    std::to_string(last_step));
    for (const auto& e : fs::directory_iterator(dir))
      if (is_temp(e.path().filename().string()))
        throw Failure("a graceful stop left a temporary file: " + e.path().filename().string());
    // The step's weights are the snapshot's model.* entries, tensor for tensor.
    const ctnn::io::StateDict w = ctnn::io::read_checkpoint(dir / weights);
    const ctnn::io::StateDict snap = ctnn::io::read_checkpoint(dir / resume_name());
    for (const auto& [key, t] : w) {
      const ctnn::io::Tensor* s = snap.find("model." + key);
      if (!s || s->raw_elements() != t.raw_elements())
        throw Failure(weights + "'s " + key + " is not the snapshot's model." + key);
    }
    return "stopped with exit status 130 after step " + std::to_string(step) + "; " + resume_name() + " and " + weights +
           " (its weights) saved";
  }

  // The invariants a kill at any instant must keep. Returns what it saw, for the log.
  std::string check_after_kill(const fs::path& dir, const std::string& kill, long& last_step) {
    std::vector<std::string> temps, ckpts;
    std::string complete_temp;
    long step = -1;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string leaf = e.path().filename().string();
      if (is_temp(leaf)) {
        temps.push_back(leaf + " (" + std::to_string(fs::file_size(e.path())) + " B)");
        if (ends_with(leaf.substr(0, leaf.find(".tmp-")), ".ckpt")) {
          try {
            ctnn::io::read_checkpoint(e.path());
            complete_temp = leaf;
          } catch (const ctnn::io::CheckpointError&) {
          }
        }
        continue;
      }
      // The log, and the loss curve drawn from it as the last thing a finished run does.
      if (leaf == stem() + "_train_log.csv" || leaf == stem() + "_train.svg") continue;
      if (!ends_with(leaf, ".ckpt")) throw Failure("unexpected file after a kill: " + leaf);
      ctnn::io::StateDict sd;
      try {
        sd = ctnn::io::read_checkpoint(e.path());
      } catch (const std::exception& err) {
        throw Failure("after a kill (" + kill + "), " + leaf + " does not load: " + err.what());
      }
      // A stopped run's weights hold what the final checkpoint holds.
      const auto ref = ref_.layouts.find(is_step_weights(leaf, stem()) ? stem() + "_final.ckpt" : leaf);
      if (ref == ref_.layouts.end())
        throw Failure("after a kill, " + leaf + " exists but the uninterrupted run has no such file");
      if (layout(sd) != ref->second)
        throw Failure("after a kill, " + leaf + " holds other tensors than the uninterrupted run's");
      if (leaf == resume_name()) step = sd.find("trainer.total_steps")->int64s().front();
      ckpts.push_back(leaf);
    }
    if (step < last_step)
      throw Failure("the resume snapshot went back from step " + std::to_string(last_step) + " to " +
                    std::to_string(step));
    last_step = std::max(last_step, step);
    const bool targets_save = kill.rfind("write:", 0) == 0 || kill.rfind("rename:", 0) == 0;
    bool ckpt_temp = false;
    for (const auto& t : temps) ckpt_temp |= t.find(".ckpt.tmp-") != std::string::npos;
    if (targets_save && !ckpt_temp)
      throw Failure("the kill at " + kill + " left no temporary checkpoint file: it did not hit a save");
    if (kill.rfind("rename:", 0) == 0 && complete_temp.empty())
      throw Failure("the kill at " + kill + " should leave a complete, unrenamed checkpoint");
    std::sort(ckpts.begin(), ckpts.end());
    std::string seen = "resume snapshot " + (step >= 0 ? "at step " + std::to_string(step) : std::string("absent")) +
                       "; checkpoints loading fully:";
    for (const auto& c : ckpts) seen += " " + c;
    if (!temps.empty()) {
      seen += "; left unrenamed:";
      for (const auto& t : temps) seen += " " + t;
      if (!complete_temp.empty()) seen += " [complete: " + complete_temp + "]";
    }
    return seen;
  }

  void compare_with_reference(const fs::path& dir, const Outcome& r) {
    std::map<std::string, std::string> files;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string leaf = e.path().filename().string();
      if (is_temp(leaf)) throw Failure("a temporary file is left after the resumed run finished: " + leaf);
      if (is_step_weights(leaf, stem())) continue;  // left by a stop on the way (checked then)
      files[leaf] = read_all(e.path());
    }
    for (const auto& [leaf, bytes] : ref_.files) {
      const auto it = files.find(leaf);
      if (it == files.end()) throw Failure("the resumed run wrote no " + leaf);
      if (it->second != bytes) {
        std::string detail;
        if (ends_with(leaf, ".csv")) detail = "\n--- uninterrupted:\n" + bytes + "--- resumed:\n" + it->second;
        throw Failure(leaf + " differs from the uninterrupted run's" + detail);
      }
    }
    for (const auto& [leaf, bytes] : files)
      if (!ref_.files.count(leaf)) throw Failure("the resumed run wrote " + leaf + ", the uninterrupted one did not");
    if (accuracy_line(r.output) != ref_.accuracy)
      throw Failure("accuracy differs: '" + accuracy_line(r.output) + "' against '" + ref_.accuracy + "'");
  }

  Options o_;
  std::mt19937_64 rng_;
  Reference ref_;
};

Options parse(int argc, char** argv) {
  Options o;
  int i = 1;
  auto value = [&](const std::string& flag) -> std::string {
    if (i + 1 >= argc) throw Failure(flag + " needs a value");
    return argv[++i];
  };
  for (; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") {
      o.train_args.assign(argv + i + 1, argv + argc);
      break;
    }
    if (a == "--train")
      o.train = value(a);
    else if (a == "--model")
      o.model = value(a);
    else if (a == "--work")
      o.work = value(a);
    else if (a == "--scenario")
      o.scenarios.push_back(value(a));
    else if (a == "--seed") {
      o.seed = std::stoull(value(a));
      o.seed_given = true;
    } else
      throw Failure("unknown argument " + a);
  }
  if (o.train.empty() || o.model.empty() || o.work.empty() || o.scenarios.empty())
    throw Failure("usage: fault_driver --train BIN --model NAME --work DIR --scenario SPEC... [--seed S] -- ARGS...");
  if (const char* env = std::getenv("CTNN_FAULT_SEED"); env && *env) {
    o.seed = std::stoull(env);
    o.seed_given = true;
  }
  if (!o.seed_given) o.seed = (static_cast<std::uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse(argc, argv);
    std::cout << "fault_driver: seed " << o.seed << " (CTNN_FAULT_SEED=" << o.seed << " repeats these kills)"
              << std::endl;
    fs::remove_all(o.work);
    fs::create_directories(o.work);
    Driver d(o);
    d.reference();
    for (const auto& s : o.scenarios) d.scenario(s);
    fs::remove_all(o.work);  // kept on failure, to look at
    std::cout << "fault_driver: all scenarios passed" << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cout << std::flush;
    std::cerr << "fault_driver: FAILED: " << e.what() << std::endl;
    return 1;
  }
}
