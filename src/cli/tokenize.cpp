// bitdelta tokenize: text → token ids, or ids → text, with a model folder's tokenizer.json.
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "model/tokenizer.h"

namespace bd {

namespace {

const CommandSpec kSpec = {
    "tokenize",
    "[--model DIR] (--text TEXT | --file FILE) [--add-special] [--json]\n"
    "       bitdelta tokenize [--model DIR] --decode \"ID ID ...\" [--json]",
    "Encodes text with the model folder's tokenizer.json (and nothing else from the folder) and\n"
    "prints the ids on one line, space-separated; --file reads the file's exact bytes. No special\n"
    "token is added unless --add-special. With --decode, prints the text of the ids, byte for "
    "byte\n"
    "and without an added newline.",
    {
        {"--model", "DIR",
         "model folder holding tokenizer.json (default: the embedded default model)"},
        {"--text", "TEXT", "the text to encode"},
        {"--file", "FILE", "encode this file's bytes"},
        {"--decode", "IDS", "decode these whitespace-separated token ids instead"},
        {"--add-special", "", "add the tokenizer's special tokens (e.g. BOS) around the text"},
        {"--json", "", "print one JSON object: {\"ids\": [...]} or {\"text\": ...}"},
    },
};

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  const char* cursor = text.c_str();
  while (true) {
    while (*cursor == ' ' || *cursor == '\t' || *cursor == '\n' || *cursor == '\r') ++cursor;
    if (*cursor == '\0') break;
    char* after = nullptr;
    errno = 0;
    const long long id = std::strtoll(cursor, &after, 10);
    if (after == cursor ||
        (*after != '\0' && *after != ' ' && *after != '\t' && *after != '\n' && *after != '\r'))
      throw UsageError(cat("--decode expects whitespace-separated integer ids; '",
                           std::string(cursor).substr(0, 20), "' is not one"));
    if (errno == ERANGE || id < INT32_MIN || id > INT32_MAX)
      fail("token id ", std::string(cursor, static_cast<const char*>(after)),
           " is not in the vocabulary");
    ids.push_back(int32_t(id));
    cursor = after;
  }
  return ids;
}

int encode(const Tokenizer& tokenizer, const Args& args) {
  const std::string text = args.has("--text") ? args.get("--text") : read_file(args.get("--file"));
  const std::vector<int32_t> ids = tokenizer.encode(text, args.has("--add-special"));
  if (args.has("--json")) {
    print_json({{"ids", ids}});
    return 0;
  }
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
  std::printf("%s\n", line.c_str());
  return 0;
}

int decode(const Tokenizer& tokenizer, const Args& args) {
  const std::string text = tokenizer.decode(parse_ids(args.get("--decode")));
  if (args.has("--json"))
    print_json({{"text", text}});
  else
    std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace

int run_tokenize(int argc, char** argv) {
  Args args(kSpec, argc, argv);
  const int modes = int(args.has("--text")) + int(args.has("--file")) + int(args.has("--decode"));
  if (modes != 1)
    throw UsageError("give exactly one of --text TEXT, --file FILE or --decode \"ID ID ...\"");
  if (args.has("--decode") && args.has("--add-special"))
    throw UsageError("--add-special applies to encoding only");
  const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer_for_model(model_dir_or_default(args));
  return args.has("--decode") ? decode(*tokenizer, args) : encode(*tokenizer, args);
}

}  // namespace bd
