// Command-line parsing for subcommands: each declares its options once; --help is generated
// from them and anything undeclared is rejected with one clear line.
#pragma once
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace bd {

struct Option {
  std::string name;        // "--model"
  std::string value_name;  // "DIR"; empty for a flag
  std::string help;
  bool repeatable = false;  // may be given several times (Args::get_all)
};

struct CommandSpec {
  std::string name;      // "eval"
  std::string synopsis;  // "[--model DIR] (--data FILE | --tokens FILE) [--json]"
  std::string description;
  std::vector<Option> options;
  int max_positional = 0;  // positional arguments allowed
};

class Args {
 public:
  // Parses argv (after the subcommand). Prints help and exits 0 on --help/-h;
  // throws UsageError on unknown options or missing values.
  Args(const CommandSpec& spec, int argc, char** argv);

  bool has(const std::string& name) const { return values_.count(name) > 0; }
  std::string get(const std::string& name, const std::string& fallback = "") const;
  std::string require(const std::string& name) const;  // UsageError if absent
  long long get_int(const std::string& name, long long fallback) const;
  double get_double(const std::string& name, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }
  // Every value of a repeatable option, in the order given (empty when absent).
  std::vector<std::string> get_all(const std::string& name) const;

 private:
  const CommandSpec& spec_;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::vector<std::string>> repeated_;
  std::vector<std::string> positional_;
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string help_text(const CommandSpec& spec);

// A command with subcommands (bitdelta privacy epsilon|noise|ledger, ...).
struct Subcommand {
  const char* name;
  int (*run)(int argc, char** argv);
  const char* summary;
};
// Runs `bitdelta <group> <name> ...` (argv starts at <name>): usage on --help/-h (exit 0) or
// with no name (stderr, exit 2); UsageError for an unknown name.
int run_subcommand(const std::string& group, const std::vector<Subcommand>& subcommands, int argc,
                   char** argv);

// The model folder a command uses: --model if given, else the embedded default
// (models/default next to the binary's source tree, or $BITDELTA_HOME/models/default).
std::string model_dir_or_default(const Args& args);

}  // namespace bd
