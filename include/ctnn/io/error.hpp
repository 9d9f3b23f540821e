// The one exception type of ctnn's checkpoint code.
#pragma once

#include <stdexcept>
#include <string>

#include "ctnn/core/text.hpp"

namespace ctnn::io {

// Anything wrong with a checkpoint file or with what it holds: the message starts with the
// file's name (or the name given to an in-memory buffer) and says what is wrong.
class CheckpointError : public std::runtime_error {
 public:
  CheckpointError(const std::string& file, const std::string& what)
      : std::runtime_error(file + ": " + what), file_(file) {}
  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

using ctnn::printable;  // core/text.hpp

}  // namespace ctnn::io
