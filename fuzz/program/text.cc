#include "program/text.h"

#include <cctype>
#include <cstdio>

#include "program/validate.h"

namespace svmfuzz {
namespace {

void PrintOps(const std::vector<Op>& ops, int depth, std::string* out) {
  for (const Op& op : ops) {
    out->append(2 * depth, ' ');
    *out += PrintOp(op);
    if (Describe(op.code).has_body) {
      *out += " {\n";
      PrintOps(op.body, depth + 1, out);
      out->append(2 * depth, ' ');
      *out += "}";
    }
    *out += "\n";
  }
}

struct Loc {
  int line = 1;
  int col = 1;
};

// Where each op and argument was written, shaped like the program, so that a
// validation error can point at the text.
struct OpLocs {
  Loc op;
  std::array<Loc, kMaxArgs> args;
  std::vector<OpLocs> body;
};

struct Failure {
  Loc loc;
  std::string message;
};

std::string Quote(std::string_view s) { return "'" + std::string(s) + "'"; }

// The driver file of an op that uses one (Op::file), written like an argument
// after the others and left out when it is 0.
constexpr const char* kFileKey = "file";
constexpr ArgDesc kFileArg = {kFileKey, ArgKind::kInt, 0, kMaxFiles - 1, nullptr};

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  // Throws Failure on a syntax error. `open` is where the enclosing block was
  // opened, nullptr at the top level.
  void ParseBlock(std::vector<Op>* ops, std::vector<OpLocs>* locs, const Loc* open, int depth) {
    for (;;) {
      SkipBlankLines();
      if (AtEnd()) {
        if (open)
          Fail("expected '}' to close the block opened at " + std::to_string(open->line) + ":" +
               std::to_string(open->col));
        return;
      }
      if (Peek() == '}') {
        if (!open) Fail("unexpected '}' outside a block");
        Advance();
        ExpectEndOfLine();
        return;
      }
      ops->emplace_back();
      locs->emplace_back();
      ParseOp(&ops->back(), &locs->back(), depth);
    }
  }

 private:
  void ParseOp(Op* op, OpLocs* locs, int depth) {
    locs->op = here_;
    if (Peek() == '@') {
      Advance();
      const Loc at = here_;
      const std::string word = ReadWord();
      uint64_t tid;
      if (!ParseNumber(word, &tid)) Fail("expected a thread id after '@'", at);
      op->thread = tid;
      if (!SkipSpaces()) Fail("expected a space after the thread id");
    }
    const Loc name_at = here_;
    const std::string name = ReadWord();
    if (name.empty()) Fail("expected an op name, found " + Found());
    const OpDesc* d = FindOp(name);
    // An op renamed since programs were first written: saying so beats a
    // silent change of meaning (the binary form keeps its opcode).
    if (!d && name == "prefetch")
      Fail("unknown op 'prefetch': it mapped what the CPU maps without faulting, and is now "
           "'map_present' ('mirror' faults the range in)",
           name_at);
    if (!d) Fail("unknown op " + Quote(name), name_at);
    op->code = d->code;

    bool seen[kMaxArgs] = {};
    bool seen_file = false;
    for (;;) {
      const bool spaced = SkipSpaces();
      if (AtEndOfLine() || Peek() == '{') break;
      if (!spaced) Fail("expected a space, found " + Found());
      const Loc key_at = here_;
      const std::string key = ReadWord();
      if (key.empty()) Fail("expected an argument name, found " + Found());
      if (d->uses_file && key == kFileKey) {
        if (seen_file) Fail("argument " + Quote(key) + " given twice", key_at);
        seen_file = true;
        if (Peek() != '=') Fail("expected '=' after " + Quote(key) + ", found " + Found());
        Advance();
        op->file = ParseValue(kFileArg);
        continue;
      }
      const int i = ArgIndex(op->code, key);
      if (i < 0)
        Fail(name + " has no argument " + Quote(key) + "; it takes " + ArgList(*d), key_at);
      if (seen[i]) Fail("argument " + Quote(key) + " given twice", key_at);
      seen[i] = true;
      if (Peek() != '=') Fail("expected '=' after " + Quote(key) + ", found " + Found());
      Advance();
      locs->args[i] = here_;
      op->args[i] = ParseValue(d->args[i]);
    }
    for (int i = 0; i < d->num_args; i++)
      if (!seen[i]) Fail("expected argument " + Quote(d->args[i].name) + " of " + name);

    if (d->has_body) {
      // The validator would say the same, but only after unbounded recursion.
      if (depth >= kMaxForkDepth)
        Fail("forks nest deeper than " + std::to_string(kMaxForkDepth), locs->op);
      if (Peek() != '{') Fail("expected '{' to open the " + name + " block, found " + Found());
      const Loc open = here_;
      Advance();
      ExpectEndOfLine();
      ParseBlock(&op->body, &locs->body, &open, depth + 1);
    } else {
      if (Peek() == '{') Fail(name + " takes no block");
      ExpectEndOfLine();
    }
  }

  uint64_t ParseValue(const ArgDesc& a) {
    const Loc at = here_;
    const std::string word = ReadWord();
    if (word.empty()) Fail("expected a value for " + Quote(a.name) + ", found " + Found());
    if (a.kind == ArgKind::kEnum) {
      for (uint64_t v = 0; v <= a.max; v++)
        if (word == a.values[v]) return v;
      std::string names;
      for (uint64_t v = 0; v <= a.max; v++) names += (v ? ", " : "") + std::string(a.values[v]);
      Fail(std::string(a.name) + "=" + word + ": expected one of " + names, at);
    }
    uint64_t v;
    if (!ParseNumber(word, &v))
      Fail("expected a number for " + Quote(a.name) + ", found " + Quote(word), at);
    if (v < a.min || v > a.max)
      Fail(std::string(a.name) + "=" + word + " is not in [" + std::to_string(a.min) + ", " +
               std::to_string(a.max) + "]",
           at);
    return v;
  }

  static bool ParseNumber(const std::string& word, uint64_t* out) {
    if (word.empty()) return false;
    const bool hex = word.size() > 2 && word[0] == '0' && (word[1] == 'x' || word[1] == 'X');
    const unsigned base = hex ? 16 : 10;
    uint64_t v = 0;
    for (size_t i = hex ? 2 : 0; i < word.size(); i++) {
      const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(word[i])));
      unsigned digit;
      if (c >= '0' && c <= '9') {
        digit = c - '0';
      } else if (hex && c >= 'a' && c <= 'f') {
        digit = c - 'a' + 10;
      } else {
        return false;
      }
      if (v > (UINT64_MAX - digit) / base) return false;
      v = v * base + digit;
    }
    *out = v;
    return true;
  }

  static std::string ArgList(const OpDesc& d) {
    std::string s;
    for (int i = 0; i < d.num_args; i++) s += (i ? ", " : "") + std::string(d.args[i].name);
    if (d.uses_file) s += std::string(d.num_args ? ", " : "") + "optional " + kFileKey;
    return s.empty() ? "none" : s;
  }

  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return AtEnd() ? '\0' : text_[pos_]; }
  bool AtEndOfLine() const { return AtEnd() || Peek() == '\n' || Peek() == '#'; }

  void Advance() {
    if (text_[pos_++] == '\n') {
      here_.line++;
      here_.col = 1;
    } else {
      here_.col++;
    }
  }

  // Returns whether any space was skipped.
  bool SkipSpaces() {
    const size_t start = pos_;
    while (!AtEnd() && (Peek() == ' ' || Peek() == '\t' || Peek() == '\r')) Advance();
    return pos_ != start;
  }

  void SkipComment() {
    if (Peek() == '#')
      while (!AtEnd() && Peek() != '\n') Advance();
  }

  void SkipBlankLines() {
    for (;;) {
      SkipSpaces();
      SkipComment();
      if (AtEnd() || Peek() != '\n') return;
      Advance();
    }
  }

  void ExpectEndOfLine() {
    SkipSpaces();
    SkipComment();
    if (AtEnd()) return;
    if (Peek() != '\n') Fail("expected the end of the line, found " + Found());
    Advance();
  }

  std::string ReadWord() {
    std::string word;
    while (!AtEnd() && (std::isalnum(static_cast<unsigned char>(Peek())) || Peek() == '_')) {
      word += Peek();
      Advance();
    }
    return word;
  }

  std::string Found() const {
    if (AtEnd()) return "the end of the text";
    if (Peek() == '\n') return "the end of the line";
    const unsigned char c = Peek();
    if (std::isprint(c)) return Quote(std::string(1, c));
    char hex[8];
    snprintf(hex, sizeof(hex), "0x%02x", c);
    return std::string("byte ") + hex;
  }

  [[noreturn]] void Fail(std::string message) const { Fail(std::move(message), here_); }
  [[noreturn]] static void Fail(std::string message, Loc at) {
    throw Failure{at, std::move(message)};
  }

  std::string_view text_;
  size_t pos_ = 0;
  Loc here_;
};

}  // namespace

std::string ParseError::ToString() const {
  return std::to_string(line) + ":" + std::to_string(col) + ": " + message;
}

std::string PrintOp(const Op& op) {
  std::string out;
  if (op.thread != 0) out += "@" + std::to_string(op.thread) + " ";
  const OpDesc& d = Describe(op.code);
  out += d.name;
  for (int i = 0; i < d.num_args; i++) {
    const ArgDesc& a = d.args[i];
    out += std::string(" ") + a.name + "=";
    out += a.kind == ArgKind::kEnum ? a.values[op.args[i]] : std::to_string(op.args[i]);
  }
  if (op.file != 0) out += " file=" + std::to_string(op.file);
  return out;
}

std::string Print(const Program& program) {
  std::string out;
  PrintOps(program.ops, 0, &out);
  return out;
}

std::optional<Program> Parse(std::string_view text, ParseError* error) {
  Program program;
  std::vector<OpLocs> locs;
  try {
    Parser(text).ParseBlock(&program.ops, &locs, nullptr, 0);
  } catch (const Failure& f) {
    *error = {f.loc.line, f.loc.col, f.message};
    return std::nullopt;
  }
  if (auto e = Validate(program)) {
    const OpLocs* at = nullptr;
    const std::vector<OpLocs>* level = &locs;
    for (size_t i : e->path) {
      at = &(*level)[i];
      level = &at->body;
    }
    const Loc loc = e->arg >= 0 ? at->args[e->arg] : at->op;
    *error = {loc.line, loc.col, e->message};
    return std::nullopt;
  }
  return program;
}

}  // namespace svmfuzz
