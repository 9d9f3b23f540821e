// The training run's loss log, <model>_train_log.csv: one row per step,
// epoch,step,loss,running_loss,lr.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "ctnn/io/file.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace ctnn {

class CsvLog {
 public:
  // A fresh log, or on resumption (after `total_steps` > 0 steps, at epoch/batch) the old one cut
  // back to the rows up to the snapshot (a run killed after its last snapshot logged steps that
  // are now trained again, and its last row may be cut short). The cut log replaces the old one
  // atomically, so a kill during the rewrite cannot lose the rows already logged; new rows are
  // appended. Returns the number of step rows kept (total_steps, unless rows were lost or the
  // log is another run's).
  long open(const std::filesystem::path& path, int epoch, int batch, long total_steps) {
    long kept = 0;
    std::filesystem::create_directories(path.parent_path());
    std::string text = "epoch,step,loss,running_loss,lr\n";
    if (total_steps > 0) {
      std::ifstream old(path);
      std::string line;
      std::getline(old, line);  // header
      int last_e = 0, last_b = 0;
      // Rows were flushed before the snapshot was written, so the rows up to it are complete
      // and in order; a row cut short after it can look like an earlier position ("1,1" of
      // "1,12"), which the order test rejects.
      while (std::getline(old, line)) {
        int e = 0, b = 0;
        if (!parse_row(line, e, b)) break;
        if (e > epoch || (e == epoch && b > batch)) break;
        if (e < last_e || (e == last_e && b <= last_b)) break;
        last_e = e;
        last_b = b;
        text += line;
        text += '\n';
        ++kept;
      }
    }
    io::write_file_atomically(path, [&](const io::ByteSink& sink) {
      sink(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
    });
    // A second fit() of the same Trainer opens it again: the stream still holds the file this
    // one just replaced, and open() on an open stream fails.
    out_.close();
    out_.clear();
    out_.open(path, std::ios::app);
    if (!out_) throw std::runtime_error("cannot write " + path.string());
    path_ = path;
    return kept;
  }

  // One step's row; nothing when the log was never opened.
  void row(int epoch, int batch, float loss, double running_loss, double lr) {
    if (out_) out_ << epoch << ',' << batch << ',' << loss << ',' << running_loss << ',' << lr << '\n';
  }
  void flush() {
    if (out_) out_.flush();
  }
  // Flushed and on disk (fsync): before a snapshot, whose position says which rows the log holds.
  void sync() {
    if (!out_) return;
    out_.flush();
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;  // (a log that cannot be reopened is no reason to lose the snapshot)
    ::fsync(fd);
    ::close(fd);
  }

 private:
  // epoch,step,loss,running_loss,lr with two integers first and five fields in all.
  static bool parse_row(const std::string& line, int& e, int& b) {
    if (std::count(line.begin(), line.end(), ',') != 4) return false;
    std::istringstream ss(line);
    char c1 = 0, c2 = 0;
    if (!(ss >> e >> c1 >> b >> c2) || c1 != ',' || c2 != ',') return false;
    // The last field must be complete: a number running to the end of the line.
    const auto last = line.rfind(',');
    std::size_t used = 0;
    try {
      std::stod(line.substr(last + 1), &used);
    } catch (const std::exception&) {
      return false;
    }
    return used > 0 && last + 1 + used == line.size();
  }

  std::ofstream out_;
  std::filesystem::path path_;
};

}  // namespace ctnn
