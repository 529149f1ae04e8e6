#include "cli/args.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "core/atomic_file.h"
#include "core/error.h"

namespace bd {

std::string help_text(const CommandSpec& spec) {
  std::string text = "usage: bitdelta " + spec.name + " " + spec.synopsis + "\n\n" +
                     spec.description + "\n\noptions:\n";
  for (const Option& option : spec.options) {
    std::string left =
        "  " + option.name + (option.value_name.empty() ? "" : " " + option.value_name);
    if (left.size() < 24)
      left.resize(24, ' ');
    else
      left += "\n" + std::string(24, ' ');
    text += left + option.help + "\n";
  }
  text += "  -h, --help              show this help\n";
  return text;
}

Args::Args(const CommandSpec& spec, int argc, char** argv) : spec_(spec) {
  for (int i = 0; i < argc; ++i) {
    std::string word = argv[i];
    if (word == "--help" || word == "-h") {
      std::fputs(help_text(spec).c_str(), stdout);
      std::exit(0);
    }
    if (word.size() > 1 && word[0] == '-' && !(word.size() > 1 && std::isdigit(word[1]))) {
      const Option* option = nullptr;
      for (const Option& candidate : spec.options)
        if (candidate.name == word) option = &candidate;
      if (!option)
        throw UsageError(cat("unknown option ", word, " (see bitdelta ", spec.name, " --help)"));
      if (option->value_name.empty()) {
        values_[word] = "1";
      } else {
        if (i + 1 >= argc) throw UsageError(cat(word, " needs a value ", option->value_name));
        values_[word] = argv[++i];  // the last value wins, unless the option is repeatable
        repeated_[word].push_back(values_[word]);
      }
    } else {
      if (int(positional_.size()) >= spec.max_positional)
        throw UsageError(
            cat("unexpected argument '", word, "' (see bitdelta ", spec.name, " --help)"));
      positional_.push_back(word);
    }
  }
}

std::string Args::get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

int run_subcommand(const std::string& group, const std::vector<Subcommand>& subcommands, int argc,
                   char** argv) {
  std::string names, usage;
  for (const Subcommand& s : subcommands) {
    names += std::string(names.empty() ? "" : "|") + s.name;
    std::string line = std::string("  ") + s.name;
    line.resize(12, ' ');
    usage += line + s.summary + "\n";
  }
  usage = "usage: bitdelta " + group + " " + names + " [options]   (bitdelta " + group +
          " <sub> --help)\n\n" + usage;
  if (argc < 1 || !std::strcmp(argv[0], "--help") || !std::strcmp(argv[0], "-h")) {
    std::fputs(usage.c_str(), argc < 1 ? stderr : stdout);
    return argc < 1 ? 2 : 0;
  }
  for (const Subcommand& s : subcommands)
    if (!std::strcmp(argv[0], s.name)) return s.run(argc - 1, argv + 1);
  throw UsageError(cat("unknown ", group, " command '", argv[0], "' (", names, ")"));
}

std::vector<std::string> Args::get_all(const std::string& name) const {
  auto it = repeated_.find(name);
  return it == repeated_.end() ? std::vector<std::string>{} : it->second;
}

std::string Args::require(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end())
    throw UsageError(cat(name, " is required (see bitdelta ", spec_.name, " --help)"));
  return it->second;
}

long long Args::get_int(const std::string& name, long long fallback) const {
  if (!has(name)) return fallback;
  std::string text = get(name);
  char* end = nullptr;
  long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0')
    throw UsageError(cat(name, " expects an integer, got '", text, "'"));
  return value;
}

double Args::get_double(const std::string& name, double fallback) const {
  if (!has(name)) return fallback;
  std::string text = get(name);
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0')
    throw UsageError(cat(name, " expects a number, got '", text, "'"));
  return value;
}

std::string model_dir_or_default(const Args& args) {
  if (args.has("--model")) return args.get("--model");
  if (const char* home = std::getenv("BITDELTA_HOME")) return std::string(home) + "/models/default";
  std::string dir = std::string(BITDELTA_SOURCE_DIR) + "/models/default";
  if (!path_exists(dir))
    fail("the embedded default model is missing at ", dir,
         " (pass --model DIR or set BITDELTA_HOME)");
  return dir;
}

}  // namespace bd
