// Tokenizers: the byte tokenizer, hand-computed BPE cases, HF's published pre-tokenization
// examples, and differential checks against independent references run by
// tests/reference/tokenizer_ref.py: the `regex` module for the split patterns, a Python BPE
// encoder for byte-level vocabularies, and Google's SentencePiece library for Llama-2-style BPE.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/byte_tokenizer.h"
#include "model/pretokenize.h"
#include "model/tokenizer.h"
#include "model/tokenizer_unicode.h"
#include "test_util.h"

namespace bd {
namespace {

using nlohmann::json;
using Ids = std::vector<int32_t>;
using test::error_of;

const std::string kCorpus = "/usr/share/common-licenses/GPL-3";  // in every Debian (base-files)

json read_json(const std::string& path) {
  return json::parse(read_file(path));
}

// Runs tokenizer_ref.py with `arguments`, which name where its outputs go.
void run_reference(const std::string& arguments, const test::ScratchDir& scratch) {
  const test::CommandResult run = test::run_reference("tokenizer_ref.py", arguments, scratch);
  ASSERT_EQ(run.exit_code, 0) << arguments << "\n" << run.err;
}

std::unique_ptr<Tokenizer> parse(const json& config) {
  return parse_tokenizer_json(config.dump(), "test.json");
}

std::string random_bytes(std::mt19937& rng, size_t max_length) {
  std::string text(rng() % (max_length + 1), '\0');
  for (char& c : text) c = char(rng() % 256);
  return text;
}

// Random valid UTF-8 over all planes, avoiding surrogates (not encodable) and `excluded`.
std::string random_utf8(std::mt19937& rng, size_t max_length, uint32_t excluded = 0) {
  std::string text;
  const size_t length = rng() % (max_length + 1);
  for (size_t i = 0; i < length; ++i) {
    uint32_t cp = 0;
    switch (rng() % 4) {
      case 0:
        cp = rng() % 0x80;
        break;
      case 1:
        cp = 0x80 + rng() % 0x780;
        break;
      case 2:
        cp = 0x800 + rng() % 0xF800;
        break;
      default:
        cp = 0x10000 + rng() % 0x100000;
        break;
    }
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp == excluded) continue;
    unicode::append_utf8(text, cp);
  }
  return text;
}

// ---- the byte tokenizer ----------------------------------------------------------------------

TEST(ByteTokenizer, OneIdPerByteAndBosEos) {
  auto tokenizer = make_byte_tokenizer();
  EXPECT_EQ(tokenizer->vocab_size(), kByteVocabSize);
  EXPECT_EQ(tokenizer->bos_id(), kByteBosId);
  EXPECT_EQ(tokenizer->eos_id(), kByteEosId);
  EXPECT_EQ(tokenizer->encode("Hi", false), (Ids{72, 105}));
  EXPECT_EQ(tokenizer->encode("Hi", true), (Ids{256, 72, 105}));
  EXPECT_EQ(tokenizer->encode("", true), (Ids{256}));
  EXPECT_EQ(tokenizer->encode("é\n", false), (Ids{0xC3, 0xA9, 10}));
  EXPECT_EQ(tokenizer->encode(std::string("\0\xff", 2), false), (Ids{0, 255}));
  EXPECT_EQ(tokenizer->decode({256, 72, 105, 257}), "<|bos|>Hi<|eos|>");
  EXPECT_EQ(tokenizer->decode({0xC3, 0xA9}), "é");
}

TEST(ByteTokenizer, SpecialTokensSpelledInTextAreRecognised) {
  auto tokenizer = make_byte_tokenizer();
  EXPECT_EQ(tokenizer->encode("a<|eos|>b<|bos", false),
            (Ids{97, 257, 98, '<', '|', 'b', 'o', 's'}));
}

TEST(ByteTokenizer, JsonIsAStandardHfBpe) {
  const json config = json::parse(byte_tokenizer_json());
  const json& model = config["model"];
  EXPECT_EQ(model["type"], "BPE");
  EXPECT_EQ(model["byte_fallback"], true);
  EXPECT_TRUE(model["merges"].empty());
  ASSERT_EQ(model["vocab"].size(), 258u);
  EXPECT_EQ(model["vocab"]["<0x00>"], 0);
  EXPECT_EQ(model["vocab"]["<0x0A>"], 10);
  EXPECT_EQ(model["vocab"]["<0xFF>"], 255);
  EXPECT_EQ(model["vocab"]["<|bos|>"], 256);
  EXPECT_EQ(config["added_tokens"].size(), 2u);
  EXPECT_EQ(config["post_processor"]["special_tokens"]["<|bos|>"]["ids"], json::array({256}));
  EXPECT_EQ(config["decoder"]["decoders"][0]["type"], "ByteFallback");
}

TEST(ByteTokenizer, RoundTripsAnyBytes) {
  auto tokenizer = make_byte_tokenizer();
  std::mt19937 rng(7);
  for (int i = 0; i < 300; ++i) {
    const std::string text = random_bytes(rng, 200);
    const Ids ids = tokenizer->encode(text, false);
    ASSERT_EQ(ids.size(), text.size());
    for (size_t j = 0; j < text.size(); ++j) ASSERT_EQ(ids[j], int32_t(uint8_t(text[j])));
    ASSERT_EQ(tokenizer->decode(ids), text);
  }
}

TEST(ByteTokenizer, DecodeRejectsIdsOutsideTheVocabulary) {
  auto tokenizer = make_byte_tokenizer();
  EXPECT_NE(error_of([&] {
              tokenizer->decode({72, 258});
            }).find("token id 258 is not in the vocabulary"),
            std::string::npos);
  EXPECT_NE(error_of([&] { tokenizer->decode({-1}); }).find("token id -1"), std::string::npos);
}

// ---- hand-computed BPE -----------------------------------------------------------------------

// A GPT-2-style tokenizer: the 256 byte characters (id = byte value) and six merges.
json hand_gpt2() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[unicode::byte_to_unicode(uint8_t(b))] = b;
  const std::vector<std::string> merged = {"Ġt", "he", "Ġthe", "ll", "hell", "hello"};
  for (size_t i = 0; i < merged.size(); ++i) vocab[merged[i]] = 256 + int(i);
  return {
      {"version", "1.0"},
      {"added_tokens", json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges", {"Ġ t", "h e", "Ġt he", "l l", "he ll", "hell o"}}}}};
}

TEST(HandComputedBpe, Gpt2Style) {
  auto tokenizer = parse(hand_gpt2());
  // Words: "hello" "Ġthe" "Ġ" "Ġhell" (the two-space run leaves one space to the next word).
  // hello: h e l l o → he l l o → he ll o → hell o → hello.  Ġthe: Ġt h e → Ġt he → Ġthe.
  // Ġhell: Ġ he l l → Ġ he ll → Ġ hell (no merge "Ġ hell").
  const std::string text = "hello the  hell";
  EXPECT_EQ(tokenizer->encode(text, false), (Ids{261, 258, 32, 32, 260}));
  EXPECT_EQ(tokenizer->decode({261, 258, 32, 32, 260}), text);
  // Equal ranks: the leftmost pair merges first.
  EXPECT_EQ(tokenizer->encode("lll", false), (Ids{259, 'l'}));
  EXPECT_EQ(tokenizer->vocab_size(), 262);
  EXPECT_EQ(tokenizer->bos_id(), -1);
}

TEST(HandComputedBpe, MergesAsPairs) {
  json config = hand_gpt2();
  json merges = json::array();
  for (const char* pair : {"Ġ t", "h e", "Ġt he", "l l", "he ll", "hell o"}) {
    const std::string text = pair;
    merges.push_back(
        json::array({text.substr(0, text.find(' ')), text.substr(text.find(' ') + 1)}));
  }
  config["model"]["merges"] = merges;
  EXPECT_EQ(parse(config)->encode("hello the  hell", false), (Ids{261, 258, 32, 32, 260}));
}

// A Llama-2-style tokenizer: <unk> <s> </s>, 256 byte tokens, then ▁ a b ▁a ab ▁ab.
json hand_sentencepiece() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  const std::vector<std::string> pieces = {"▁", "a", "b", "▁a", "ab", "▁ab"};
  for (size_t i = 0; i < pieces.size(); ++i) vocab[pieces[i]] = 259 + int(i);
  const auto special = [](int id, const char* content) {
    return json{{"id", id}, {"content", content}, {"special", true}, {"normalized", false}};
  };
  return {{"added_tokens", {special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")}},
          {"normalizer",
           {{"type", "Sequence"},
            {"normalizers",
             {{{"type", "Prepend"}, {"prepend", "▁"}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
          {"pre_tokenizer", nullptr},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single",
             {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"pair", json::array()},
            {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
          {"decoder",
           {{"type", "Sequence"},
            {"decoders",
             {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
              {{"type", "ByteFallback"}},
              {{"type", "Fuse"}},
              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"model",
           {{"type", "BPE"},
            {"unk_token", "<unk>"},
            {"fuse_unk", true},
            {"byte_fallback", true},
            {"vocab", vocab},
            {"merges", {"▁ a", "a b", "▁a b"}}}}};
}

TEST(HandComputedBpe, SentencePieceStyleWithByteFallback) {
  auto tokenizer = parse(hand_sentencepiece());
  // "▁ab▁ba▁é": ▁ a → ▁a, then ▁a b → ▁ab (the "a b" candidate went stale); é is not in the
  // vocabulary, so its bytes C3 A9 become <0xC3> <0xA9> = 3 + byte.
  const Ids expected = {264, 259, 261, 260, 259, 3 + 0xC3, 3 + 0xA9};
  EXPECT_EQ(tokenizer->encode("ab ba é", false), expected);
  EXPECT_EQ(tokenizer->decode(expected), "ab ba é");
  Ids with_bos = {1};
  with_bos.insert(with_bos.end(), expected.begin(), expected.end());
  EXPECT_EQ(tokenizer->encode("ab ba é", true), with_bos);
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_EQ(tokenizer->eos_id(), 2);
  EXPECT_EQ(tokenizer->encode("", false), Ids{});
  EXPECT_EQ(tokenizer->encode(" ", false), (Ids{259, 259}));
  EXPECT_EQ(tokenizer->decode({259, 259}), " ");
}

TEST(HandComputedBpe, UnknownCharactersWithoutByteFallback) {
  json config = hand_sentencepiece();
  config["model"]["byte_fallback"] = false;
  // "▁éé": fuse_unk makes one <unk> of the run.
  EXPECT_EQ(parse(config)->encode("éé", false), (Ids{259, 0}));
  config["model"]["unk_token"] = nullptr;
  EXPECT_NE(error_of([&] { parse(config)->encode("é", false); }).find("cannot represent"),
            std::string::npos);
}

// ---- added tokens ----------------------------------------------------------------------------

TEST(AddedTokens, StripSingleWordLongestFirstAndNormalized) {
  json config = json::parse(byte_tokenizer_json());
  const auto added = [&](int id, const char* content, json options) {
    json token = {{"id", id}, {"content", content}, {"special", false}, {"normalized", false}};
    token.update(options);
    config["added_tokens"].push_back(token);
  };
  added(258, "<mask>", {{"lstrip", true}});
  added(259, "[X]", {{"single_word", true}});
  added(260, "<sp>", {{"rstrip", true}});
  added(261, "ab", json::object());
  added(262, "abc", json::object());
  added(263, "x y", {{"normalized", true}});
  config["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "_"}};
  auto tokenizer = parse(config);
  EXPECT_EQ(tokenizer->encode("q  <mask>b", false), (Ids{'q', 258, 'b'}));
  EXPECT_EQ(tokenizer->encode("q[X]b", false), (Ids{'q', '[', 'X', ']', 'b'}));
  EXPECT_EQ(tokenizer->encode("q [X] b", false), (Ids{'q', '_', 259, '_', 'b'}));
  EXPECT_EQ(tokenizer->encode("<sp>   c", false), (Ids{260, 'c'}));
  EXPECT_EQ(tokenizer->encode("zabcab", false), (Ids{'z', 262, 261}));
  // "x y" is matched after normalization, both as "x y" and as the already-normalized "x_y".
  EXPECT_EQ(tokenizer->encode("x y", false), (Ids{263}));
  EXPECT_EQ(tokenizer->encode("x_y", false), (Ids{263}));
  EXPECT_EQ(tokenizer->decode({258, 263}), "<mask>x y");
  EXPECT_EQ(tokenizer->vocab_size(), 264);
}

// ---- pre-tokenization ------------------------------------------------------------------------

std::vector<std::string> pre_tokens(const json& config, const std::string& text) {
  std::vector<std::string> words;
  for (const TextPiece& piece : PreTokenizer::from_json(config, "test").apply({{text, true}}))
    words.push_back(piece.text);
  return words;
}

// Expected splits published in Hugging Face tokenizers' own tests (pre_tokenizers/byte_level.rs
// and metaspace.rs).
TEST(PreTokenize, PublishedHfExamples) {
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  EXPECT_EQ(pre_tokens(byte_level, "Hello my friend, how is your day going?"),
            (std::vector<std::string>{"Hello", "Ġmy", "Ġfriend", ",", "Ġhow", "Ġis", "Ġyour",
                                      "Ġday", "Ġgoing", "?"}));
  EXPECT_EQ(pre_tokens(byte_level, "Hello there\nHello there"),
            (std::vector<std::string>{"Hello", "Ġthere", "Ċ", "Hello", "Ġthere"}));
  EXPECT_EQ(pre_tokens(byte_level, "Hello there       dear"),
            (std::vector<std::string>{"Hello", "Ġthere", "ĠĠĠĠĠĠ", "Ġdear"}));
  EXPECT_EQ(pre_tokens(byte_level, "i⭢j"), (std::vector<std::string>{"i", "âŃ¢", "j"}));
  const json prefixed = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  EXPECT_EQ(pre_tokens(prefixed, "Hello my friend,"),
            (std::vector<std::string>{"ĠHello", "Ġmy", "Ġfriend", ","}));
  const json no_regex = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", false}};
  EXPECT_EQ(pre_tokens(no_regex, "Hello my friend, how is your day going?"),
            (std::vector<std::string>{"ĠHelloĠmyĠfriend,ĠhowĠisĠyourĠdayĠgoing?"}));

  const json metaspace = {
      {"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}, {"split", true}};
  EXPECT_EQ(pre_tokens(metaspace, "Hey friend!"), (std::vector<std::string>{"▁Hey", "▁friend!"}));
  EXPECT_EQ(pre_tokens(metaspace, "Hey   friend!"),
            (std::vector<std::string>{"▁Hey", "▁", "▁", "▁friend!"}));
}

// Metaspace's prepend_scheme "first" next to special tokens (HF's metaspace.rs test, with <s>
// as an added token that splits the text first).
TEST(PreTokenize, MetaspaceFirstOnlyAtTheStartOfTheText) {
  json config = json::parse(byte_tokenizer_json());
  config["added_tokens"].push_back({{"id", 258}, {"content", "<s>"}, {"special", true}});
  config["model"]["vocab"]["▁"] = 259;
  config["pre_tokenizer"] = {
      {"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "first"}, {"split", false}};
  auto tokenizer = parse(config);
  // Pieces: "▁Hey▁" <s> "how▁" <s> "are▁" <s> "▁you" (▁ is token 259; other characters are bytes).
  const Ids ids = tokenizer->encode(" Hey <s>how <s>are <s> you", false);
  const Ids expected = {259, 'H', 'e', 'y', 259, 258, 'h', 'o', 'w', 259,
                        258, 'a', 'r', 'e', 259, 258, 259, 'y', 'o', 'u'};
  EXPECT_EQ(ids, expected);
  EXPECT_EQ(tokenizer->encode("Hey", false), (Ids{259, 'H', 'e', 'y'}));
}

TEST(PreTokenize, SplitBehaviors) {
  const auto split = [](const char* behavior, bool invert) {
    return json{{"type", "Split"},
                {"pattern", {{"String", "-"}}},
                {"behavior", behavior},
                {"invert", invert}};
  };
  using Words = std::vector<std::string>;
  const std::string text = "the-final--countdown";
  EXPECT_EQ(pre_tokens(split("Removed", false), text), (Words{"the", "final", "countdown"}));
  EXPECT_EQ(pre_tokens(split("Isolated", false), text),
            (Words{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(pre_tokens(split("MergedWithPrevious", false), text),
            (Words{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(pre_tokens(split("MergedWithNext", false), text),
            (Words{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(pre_tokens(split("Contiguous", false), text),
            (Words{"the", "-", "final", "--", "countdown"}));
  EXPECT_EQ(pre_tokens(split("Removed", true), text), (Words{"-", "-", "-"}));
}

TEST(PreTokenize, SplitRegexesMatchPythonRegex) {
  const test::ScratchDir scratch;
  run_reference("pretokenize " + (scratch / "pre.json"), scratch);
  const json cases = read_json(scratch / "pre.json");
  ASSERT_GT(cases.size(), 3000u);
  const std::pair<const char*, SplitRegex> regexes[] = {
      {"gpt2", SplitRegex::kGpt2}, {"cl100k", SplitRegex::kCl100k}, {"qwen2", SplitRegex::kQwen2}};
  int mismatches = 0;
  for (const json& c : cases) {
    const std::string text = c["text"];
    for (const auto& [name, regex] : regexes) {
      std::vector<std::string> words;
      for (const ByteRange& r : find_split_regex_matches(text, regex))
        words.push_back(text.substr(r.begin, r.end - r.begin));
      const auto expected = c[name].get<std::vector<std::string>>();
      if (words != expected && ++mismatches <= 5)
        ADD_FAILURE() << name << " differs on " << json(text).dump();
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(PreTokenize, RecognisesOnlyTheImplementedRegexes) {
  EXPECT_EQ(recognize_split_regex(
                R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)"),
            SplitRegex::kGpt2);
  EXPECT_FALSE(recognize_split_regex(R"(\w+|[^\w\s]+)"));
}

// ---- differential: byte-level BPE against the Python encoder -----------------------------------

// Runs `tokenizer_ref.py <kKind> CORPUS DIR` once for the whole suite; its tests read DIR.
template <const char* kKind>
class ReferenceOutput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = std::make_unique<test::ScratchDir>();
    dir_ = scratch_->path();
    run_reference(std::string(kKind) + " " + kCorpus + " " + dir_, *scratch_);
  }
  static void TearDownTestSuite() { scratch_.reset(); }
  static inline std::unique_ptr<test::ScratchDir> scratch_;
  static inline std::string dir_;
};

constexpr char kByteLevel[] = "bytelevel";
using ByteLevelReference = ReferenceOutput<kByteLevel>;

TEST_F(ByteLevelReference, IdsMatch) {
  const json cases = read_json(dir_ + "/bytelevel_cases.json");
  auto gpt2 = load_tokenizer(dir_ + "/gpt2.json");
  auto gpt2_prefix = load_tokenizer(dir_ + "/gpt2_prefix.json");
  auto llama3 = load_tokenizer(dir_ + "/llama3.json");
  ASSERT_GT(cases.size(), 400u);
  int mismatches = 0;
  for (const json& c : cases) {
    const std::string text = c["text"];
    const auto check = [&](const char* name, const Ids& ids) {
      if (ids != c[name].get<Ids>() && ++mismatches <= 5)
        ADD_FAILURE() << name << " differs on " << json(text).dump();
    };
    check("gpt2", gpt2->encode(text, false));
    check("gpt2_prefix", gpt2_prefix->encode(text, false));
    check("llama3", llama3->encode(text, false));
    check("llama3_bos", llama3->encode(text, true));
    if (gpt2->decode(gpt2->encode(text, false)) != text && ++mismatches <= 5)
      ADD_FAILURE() << "gpt2 round trip";
    if (llama3->decode(llama3->encode(text, false)) != text && ++mismatches <= 5)
      ADD_FAILURE() << "llama3 round trip";
  }
  EXPECT_EQ(mismatches, 0);
}

TEST_F(ByteLevelReference, BosEosAndVocabSize) {
  auto gpt2 = load_tokenizer(dir_ + "/gpt2.json");
  auto llama3 = load_tokenizer(dir_ + "/llama3.json");
  const json llama3_config = read_json(dir_ + "/llama3.json");
  EXPECT_EQ(gpt2->bos_id(), gpt2->eos_id());  // <|endoftext|> is both
  EXPECT_EQ(gpt2->bos_id(), gpt2->vocab_size() - 1);
  EXPECT_EQ(llama3->bos_id(), llama3_config["added_tokens"][0]["id"].get<int32_t>());
  EXPECT_EQ(llama3->eos_id(), llama3_config["added_tokens"][1]["id"].get<int32_t>());
  EXPECT_EQ(llama3->vocab_size(), llama3_config["added_tokens"][2]["id"].get<int64_t>() + 1);
}

TEST_F(ByteLevelReference, RoundTripsRandomBytesAndUtf8) {
  auto gpt2 = load_tokenizer(dir_ + "/gpt2.json");
  auto llama3 = load_tokenizer(dir_ + "/llama3.json");
  std::mt19937 rng(11);
  for (int i = 0; i < 300; ++i) {
    const std::string bytes = random_bytes(rng, 64), utf8 = random_utf8(rng, 64);
    for (const std::string* text : {&bytes, &utf8}) {
      ASSERT_EQ(gpt2->decode(gpt2->encode(*text, false)), *text)
          << json::binary({text->begin(), text->end()}).dump();
      ASSERT_EQ(llama3->decode(llama3->encode(*text, false)), *text);
    }
  }
}

// ---- differential: SentencePiece-style BPE against the SentencePiece library -------------------

constexpr char kSentencePiece[] = "sentencepiece";
using SentencePieceReference = ReferenceOutput<kSentencePiece>;

// HF's Metaspace pre-tokenizer prepends ▁ only to text that does not already start with one (after
// spaces become ▁), where SentencePiece always adds its dummy prefix: text that starts with a space
// or a ▁ is the one place the two differ (and where the Metaspace form cannot round-trip).
bool metaspace_differs(const std::string& file, const std::string& text) {
  return file == "/spm_metaspace.json" && (text.starts_with(" ") || text.starts_with("▁"));
}

TEST_F(SentencePieceReference, IdsAndDecodingMatch) {
  const json cases = read_json(dir_ + "/spm_cases.json");
  ASSERT_GT(cases.size(), 400u);
  for (const std::string file : {"/spm_legacy.json", "/spm_metaspace.json"}) {
    SCOPED_TRACE(file);
    auto tokenizer = load_tokenizer(dir_ + file);
    EXPECT_EQ(tokenizer->bos_id(), 1);
    EXPECT_EQ(tokenizer->eos_id(), 2);
    int mismatches = 0, compared = 0;
    for (const json& c : cases) {
      const std::string text = c["text"];
      if (metaspace_differs(file, text)) continue;
      ++compared;
      const Ids ids = tokenizer->encode(text, false);
      if (ids != c["ids"].get<Ids>() && ++mismatches <= 5)
        ADD_FAILURE() << "ids differ on " << json(text).dump();
      if (tokenizer->encode(text, true) != c["ids_bos"].get<Ids>() && ++mismatches <= 5)
        ADD_FAILURE() << "bos ids";
      if (tokenizer->decode(c["ids"].get<Ids>()) != c["decoded"].get<std::string>() &&
          ++mismatches <= 5)
        ADD_FAILURE() << "decoding differs on " << json(text).dump();
    }
    EXPECT_EQ(mismatches, 0);
    EXPECT_GT(compared, 400);
  }
}

TEST_F(SentencePieceReference, RoundTripsRandomUtf8) {
  // "▁" itself reads back as a space: SentencePiece's format cannot tell them apart.
  for (const std::string file : {"/spm_legacy.json", "/spm_metaspace.json"}) {
    auto tokenizer = load_tokenizer(dir_ + file);
    std::mt19937 rng(13);
    for (int i = 0; i < 300; ++i) {
      const std::string text = random_utf8(rng, 64, 0x2581);
      if (metaspace_differs(file, text)) continue;
      ASSERT_EQ(tokenizer->decode(tokenizer->encode(text, false)), text) << file;
    }
  }
}

// ---- bad input -------------------------------------------------------------------------------

// The error message of loading `config` after `edit`.
std::string error_after(const std::function<void(json&)>& edit) {
  json config = hand_gpt2();
  edit(config);
  return error_of([&] { parse(config); });
}

TEST(TokenizerErrors, NameTheFileAndTheField) {
  const auto message = [](const std::string& text) {
    return error_of([&] { parse_tokenizer_json(text, "t.json"); });
  };
  const auto contains = [](const std::string& message, const std::string& part) {
    return message.find(part) != std::string::npos
               ? ::testing::AssertionSuccess()
               : ::testing::AssertionFailure() << "message: '" << message << "'";
  };
  EXPECT_TRUE(contains(message("{\"model\": "), "t.json: not valid JSON"));
  EXPECT_TRUE(contains(message("[1, 2]"), "t.json: expected a JSON object"));
  EXPECT_TRUE(contains(message("{}"), "t.json: model: missing"));
  EXPECT_TRUE(contains(message(R"({"model": {"type": "Unigram", "vocab": []}})"),
                       "model.type: the model type 'Unigram'"));
  EXPECT_TRUE(contains(message(R"({"model": {"type": "WordPiece"}})"), "not supported"));
  EXPECT_TRUE(contains(error_after([](json& c) { c["model"]["merges"].push_back("q zz"); }),
                       "t.json: model.merges[6]: 'zz' is not in the vocabulary"));
  EXPECT_TRUE(contains(error_after([](json& c) { c["model"]["merges"].push_back("ab"); }),
                       "model.merges[6]: expected \"left right\""));
  EXPECT_TRUE(contains(error_after([](json& c) { c["model"]["vocab"]["x"] = "seven"; }),
                       "model.vocab: the id of 'x'"));
  EXPECT_TRUE(contains(error_after([](json& c) { c["model"]["vocab"]["xyz"] = 3; }),
                       "id 3 is given to both"));
  EXPECT_TRUE(contains(error_after([](json& c) { c["model"]["vocab"] = json::array(); }),
                       "model.vocab: expected an object"));
  EXPECT_TRUE(contains(error_after([](json& c) { c["model"]["dropout"] = 0.1; }), "model.dropout"));
  EXPECT_TRUE(contains(error_after([](json& c) { c["model"]["continuing_subword_prefix"] = "##"; }),
                       "model.continuing_subword_prefix"));
  EXPECT_TRUE(contains(error_after([](json& c) {
                         c["pre_tokenizer"] = {{"type", "Whitespace"}};
                       }),
                       "t.json: pre_tokenizer.type: the pre-tokenizer 'Whitespace'"));
  const auto unknown_regex = [](json& c) {
    const json split = {
        {"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Isolated"}};
    c["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", json::array({split})}};
  };
  EXPECT_TRUE(contains(error_after(unknown_regex),
                       "pre_tokenizer.pretokenizers[0].pattern: the regex '\\w+'"));
  const auto unknown_behavior = [](json& c) {
    c["pre_tokenizer"] = {
        {"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", "Sideways"}};
  };
  EXPECT_TRUE(contains(error_after(unknown_behavior),
                       "pre_tokenizer.behavior: unknown split behavior 'Sideways'"));
  EXPECT_TRUE(contains(error_after([](json& c) {
                         c["normalizer"] = {{"type", "Lowercase"}};
                       }),
                       "normalizer.type: the normalizer 'Lowercase'"));
  EXPECT_TRUE(contains(error_after([](json& c) {
                         c["decoder"] = {{"type", "WordPiece"}};
                       }),
                       "decoder.type: the decoder 'WordPiece'"));
  EXPECT_TRUE(contains(error_after([](json& c) {
                         c["post_processor"] = {{"type", "Mystery"}};
                       }),
                       "post_processor.type"));
  const auto empty_added = [](json& c) {
    c["added_tokens"] = json::array({{{"id", 3}, {"content", ""}}});
  };
  EXPECT_TRUE(contains(error_after(empty_added), "added_tokens[0].content"));
  const auto bad_template = [](json& c) {
    c["post_processor"] = {{"type", "TemplateProcessing"},
                           {"single", json::array()},
                           {"special_tokens", json::object()}};
  };
  EXPECT_TRUE(contains(error_after(bad_template), "post_processor.single: the template has no $A"));
}

TEST(TokenizerErrors, MissingFileNamesThePath) {
  const test::ScratchDir scratch;
  EXPECT_NE(
      error_of([&] { load_tokenizer_for_model(scratch.path()); }).find(scratch / "tokenizer.json"),
      std::string::npos);
}

TEST(TokenizerErrors, NormalizerNeedsUtf8) {
  json config = hand_gpt2();
  config["normalizer"] = {{"type", "NFC"}};
  auto tokenizer = parse(config);
  EXPECT_EQ(tokenizer->encode("e\xCC\x81", false),
            tokenizer->encode("\xC3\xA9", false));  // é composed
  EXPECT_NE(error_of([&] { tokenizer->encode("\xff", false); }).find("not valid UTF-8"),
            std::string::npos);
}

}  // namespace
}  // namespace bd
