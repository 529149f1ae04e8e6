// Helpers of the server tests: a `bitdelta serve` child process on a free loopback port, and the
// bundled users' adapters for the default model (fine-tuned once, kept in the test cache).
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "test_util.h"

namespace bd::test {

// `bitdelta serve --port 0 ARGS` in a child process; the constructor returns once it listens.
class ServerProcess {
 public:
  explicit ServerProcess(const std::string& arguments) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::dup2(fds[1], 2);
      ::close(fds[0]);
      ::close(fds[1]);
      const std::string line =
          "exec " + shell_quote(BITDELTA_BINARY) + " serve --port 0 " + arguments + " >/dev/null";
      ::execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    reader_ = std::thread([this, fd = fds[0]] {
      char buffer[4096];
      ssize_t got;
      while ((got = ::read(fd, buffer, sizeof buffer)) > 0) {
        std::lock_guard<std::mutex> lock(mutex_);
        err_.append(buffer, size_t(got));
      }
      ::close(fd);
    });
    const std::string marker = "listening on http://127.0.0.1:";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        const size_t at = err_.find(marker);
        if (at != std::string::npos && err_.find(' ', at + marker.size()) != std::string::npos) {
          port_ = std::atoi(err_.c_str() + at + marker.size());
          return;
        }
      }
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    throw std::runtime_error("bitdelta serve did not start: " + stderr_text());
  }
  ~ServerProcess() {
    if (pid_ > 0) stop();
    if (reader_.joinable()) reader_.join();
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  std::string stderr_text() {
    std::lock_guard<std::mutex> lock(mutex_);
    return err_;
  }
  // Sends `signal` and waits: the exit code (-1 if killed by a signal or already gone).
  int stop(int signal = SIGTERM) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, signal);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    if (reader_.joinable()) reader_.join();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::thread reader_;
  std::mutex mutex_;
  std::string err_;
};

inline std::string default_model_dir() {
  return std::string(BITDELTA_SOURCE_DIR) + "/models/default";
}

// A folder holding zippy.bitdelta and tao.bitdelta: the default model fine-tuned for 30 steps on
// those bundled users' training text and compressed (per-matrix mean scales), with owners
// did:lux:zippy and did:lux:tao. Made once per build (about 40 s) in the test cache, under a
// file lock so that parallel test processes share it.
inline std::string bundled_user_adapters() {
  const char* cache = std::getenv("BITDELTA_CACHE_DIR");
  const std::string root = std::string(cache ? cache : "/tmp") + "/serve-user-adapters-v1";
  std::filesystem::create_directories(root);
  const int lock = ::open((root + ".lock").c_str(), O_CREAT | O_RDWR, 0644);
  ::flock(lock, LOCK_EX);
  const std::string done = root + "/complete";
  if (!std::filesystem::exists(done)) {
    ScratchDir scratch;
    for (const std::string user : {"zippy", "tao"}) {
      const std::string data = std::string(BITDELTA_SOURCE_DIR) + "/data/users/" + user;
      const std::string finetune = scratch / (user + "-finetune");
      const CommandResult train = run_bitdelta(
          "train --data " + shell_quote(data + "/train.txt") + " -o " + shell_quote(finetune) +
              " --steps 30 --batch 8 --seq 128 --lr 5e-4 --freeze-embeddings --seed 1 --json",
          scratch);
      const CommandResult compress = run_bitdelta(
          "compress --base " + shell_quote(default_model_dir()) + " --finetuned " +
              shell_quote(finetune) + " -o " + shell_quote(root + "/" + user + ".bitdelta") +
              " --force --scale mean --granularity matrix --owner did:lux:" + user,
          scratch);
      if (train.exit_code != 0 || compress.exit_code != 0) {
        ::flock(lock, LOCK_UN);
        ::close(lock);
        throw std::runtime_error("making the user adapters failed: " + train.err + compress.err);
      }
    }
    write_bytes(done, "ok");
  }
  ::flock(lock, LOCK_UN);
  ::close(lock);
  return root;
}

}  // namespace bd::test
