#include "campaign/judge.h"

#include <pybind11/embed.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <memory>
#include <utility>

namespace py = pybind11;

namespace svmfuzz::campaign {
namespace {

// One interpreter for the process, started on the first judge and never
// finalised: the harness leaves through exit(), where finalising an
// interpreter other atexit handlers may still call into is unsafe.
bool StartInterpreter() {
  if (!Py_IsInitialized()) py::initialize_interpreter(false);
  return Py_IsInitialized();
}

std::string PythonError(const py::error_already_set& e) { return e.what(); }

}  // namespace

Judge PythonJudge(const std::filesystem::path& pyharness, std::string* error) {
  // Checked first: once imported, the package would be found from anywhere.
  std::error_code ec;
  if (!std::filesystem::is_regular_file(pyharness / "svmfuzz" / "oracles" / "verdict.py", ec)) {
    *error = "no oracles in " + pyharness.string() + " (svmfuzz/oracles/verdict.py)";
    return nullptr;
  }
  if (!StartInterpreter()) {
    *error = "cannot start the Python interpreter for the oracles";
    return nullptr;
  }
  std::shared_ptr<py::object> judge;
  try {
    py::module_::import("sys").attr("path").attr("insert")(0, pyharness.string());
    // The oracles decode RESULTs with the runner module; this build's has the harness's code.
    py::module_::import("svmfuzz.native").attr("use_build")(
        std::filesystem::path(SVMFUZZ_BUILD_DIR));
    judge = std::make_shared<py::object>(
        py::module_::import("svmfuzz.oracles.verdict").attr("judge"));
  } catch (const py::error_already_set& e) {
    *error = "cannot load the oracles from " + pyharness.string() + ": " + PythonError(e);
    return nullptr;
  }
  return [judge](const Outcome& o, const std::string& console, Judgement* out,
                 std::string* why) {
    try {
      py::object result = py::none();
      if (o.result) {
        result = py::bytes(reinterpret_cast<const char*>(o.result_payload.data()),
                           o.result_payload.size());
      }
      py::list stale;
      for (const CtlEvent& e : o.stale) {
        stale.append(py::bytes(reinterpret_cast<const char*>(&e), sizeof(e)));
      }
      // The guest's console is bytes: what is not UTF-8 is replaced.
      py::object text = py::reinterpret_steal<py::object>(
          PyUnicode_DecodeUTF8(console.data(), static_cast<Py_ssize_t>(console.size()), "replace"));
      if (!text) throw py::error_already_set();
      auto [found, end] = (*judge)(result, text, static_cast<int>(o.lost_kind), o.lost, stale)
                              .cast<std::pair<std::vector<std::pair<std::string, std::string>>,
                                              bool>>();
      out->findings.clear();
      for (auto& [title, category] : found) out->findings.push_back({title, category});
      out->end_life = end;
      return true;
    } catch (const py::error_already_set& e) {
      *why = "the oracles failed: " + PythonError(e);
      return false;
    } catch (const py::cast_error& e) {
      *why = std::string("the oracles answered in an unknown form: ") + e.what();
      return false;
    }
  };
}

}  // namespace svmfuzz::campaign
