// Helpers shared by the test programs: scratch folders, files, running the CLI and Python.
#pragma once
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/mapped_file.h"

namespace bd::test {

// A fresh folder under /tmp, removed with everything in it when the object dies.
class ScratchDir {
 public:
  ScratchDir() {
    char name[] = "/tmp/bitdelta_test_XXXXXX";
    path_ = ::mkdtemp(name);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  // Writes `contents` to path()/name and returns the full path.
  std::string write(const std::string& name, const std::string& contents) const {
    const std::string file = *this / name;
    std::ofstream(file, std::ios::binary) << contents;
    return file;
  }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs a shell command line, capturing stdout, and stderr through a file in `scratch`.
inline CommandResult run_command(const std::string& command_line, const ScratchDir& scratch) {
  const std::string err_path = scratch / "stderr.txt";
  CommandResult result;
  std::FILE* pipe = ::popen((command_line + " 2>" + err_path).c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  size_t got;
  while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.out.append(buffer, got);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.err = read_file(err_path);
  return result;
}

// Runs the bitdelta binary with `arguments` (a shell fragment).
inline CommandResult run_bitdelta(const std::string& arguments, const ScratchDir& scratch) {
  return run_command(std::string(BITDELTA_BINARY) + " " + arguments, scratch);
}

// True when Debian's python3 with PyTorch is available for reference checks.
inline bool have_torch() {
  return std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
}

inline std::string reference_script(const std::string& name) {
  return std::string(BITDELTA_SOURCE_DIR) + "/tests/reference/" + name;
}

}  // namespace bd::test
