// The campaign's judgement of one program's run, by the same oracles as
// triage: pyharness/svmfuzz/oracles/verdict.py, called through a Python
// interpreter embedded in the harness. A campaign so decides what is a
// finding, ends a VM life after a kernel report, and names what it saves, by
// the titles that triage shows.
#ifndef SVMFUZZ_CAMPAIGN_JUDGE_H_
#define SVMFUZZ_CAMPAIGN_JUDGE_H_

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "runner/runner.h"

namespace svmfuzz::campaign {

struct Verdict {
  std::string title;     // syzkaller-style, as triage gives it
  std::string category;  // oracles/console.py's categories
};

struct Judgement {
  std::vector<Verdict> findings;  // the primary first; empty: nothing wrong
  bool end_life = false;          // a kernel report: the next program gets a fresh kernel
};

// Judges `outcome` with `console` as its console window. False, with
// `error`, when the oracles could not run.
using Judge = std::function<bool(const Outcome& outcome, const std::string& console,
                                 Judgement* out, std::string* error)>;

// The Python oracles of the svmfuzz package in `pyharness` (the folder that
// holds svmfuzz/), which decode RESULTs with this build's runner module
// (svmfuzz_runner_python). Starts the interpreter on first use; null, with
// `error`, when the package cannot be imported.
Judge PythonJudge(const std::filesystem::path& pyharness, std::string* error);

}  // namespace svmfuzz::campaign

#endif  // SVMFUZZ_CAMPAIGN_JUDGE_H_
