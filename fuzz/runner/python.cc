// svmfuzz_runner: the host runner for the Python harness (pyharness/svmfuzz),
// the program codec of fuzz/program (text and binary forms, C reproducers)
// that svmprog also uses, and the RESULT codec of fuzz/protocol. A RESULT
// comes as its payload bytes, which protocol.ExecResult.decode reads through
// decode_result; device events and results come as the dataclasses of
// svmfuzz.devctl. Failures raise svmfuzz_runner.Error, a SvmfuzzError, or
// DevCtlError, a devctl.DevCtlError; a program the codec refuses, or a RESULT
// that does not decode, raises ValueError. Every call that waits on the guest
// lets other Python threads run meanwhile.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "program/binary.h"
#include "program/csource.h"
#include "program/text.h"
#include "protocol/protocol.h"
#include "runner/runner.h"

namespace py = pybind11;

namespace svmfuzz {
namespace {

struct RunnerError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct DevCtlError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Console text and kernel messages may hold any bytes.
py::str Text(const std::string& s) {
  return py::reinterpret_steal<py::str>(
      PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace"));
}

py::bytes Bytes(const void* data, size_t size) {
  return py::bytes(static_cast<const char*>(data), size);
}

py::object Devctl() { return py::module_::import("svmfuzz.devctl"); }

py::object ToResult(const CtlResult& r) {
  return Devctl().attr("Result")(r.value, r.status, r.fault_id);
}

py::object ToEvent(const CtlEvent& e) { return Devctl().attr("parse_event")(Bytes(&e, sizeof(e))); }

py::list ToEvents(const std::vector<CtlEvent>& events) {
  py::list out;
  for (const CtlEvent& e : events) out.append(ToEvent(e));
  return out;
}

// Runs `call(&error)` (false on failure) without the GIL; raises the error.
template <typename F>
void RunnerCall(F call) {
  std::string error;
  bool ok;
  {
    py::gil_scoped_release release;
    ok = call(&error);
  }
  if (!ok) throw RunnerError(error);
}

// The same for the control channel, whose client keeps its error.
template <typename F>
void CtlCall(DevCtl& ctl, F call) {
  bool ok;
  {
    py::gil_scoped_release release;
    ok = call();
  }
  if (!ok) throw DevCtlError(ctl.error());
}

void BindDevCtl(py::module_& m) {
  py::class_<DevCtl, std::shared_ptr<DevCtl>>(
      m, "DevCtl",
      "A client of a device's control channel: a connected stream socket's descriptor "
      "(socket.detach()), owned from then on.")
      .def(py::init<int, double>(), py::arg("fd"), py::arg("timeout") = 10.0)
      .def("ping",
           [](DevCtl& c) {
             uint32_t version = 0, status = 0;
             CtlCall(c, [&] { return c.Ping(&version, &status); });
             return py::make_tuple(version, status);
           })
      .def(
          "access",
          [](DevCtl& c, uint16_t ctx, uint64_t va, uint8_t kind, uint8_t size, uint64_t value,
             uint64_t compare, uint8_t aop) {
            CtlResult r{};
            CtlCall(c, [&] { return c.Access(ctx, va, kind, size, value, &r, compare, aop); });
            return ToResult(r);
          },
          py::arg("ctx"), py::arg("va"), py::arg("kind"), py::arg("size") = 8, py::arg("value") = 0,
          py::arg("compare") = 0, py::arg("aop") = SVMDEV_AOP_ADD)
      .def(
          "fault_storm",
          [](DevCtl& c, uint16_t ctx, uint64_t va, uint64_t stride, uint16_t count, uint8_t kind) {
            CtlResult r{};
            CtlCall(c, [&] { return c.FaultStorm(ctx, va, stride, count, kind, &r); });
            return ToResult(r);
          },
          py::arg("ctx"), py::arg("va"), py::arg("stride"), py::arg("count"), py::arg("kind"))
      .def(
          "inval_mode",
          [](DevCtl& c, uint32_t mode, uint32_t count, uint32_t commands) {
            CtlResult r{};
            CtlCall(c, [&] { return c.InvalMode(mode, count, commands, &r); });
            return ToResult(r);
          },
          py::arg("mode"), py::arg("count"), py::arg("commands") = 0)
      .def(
          "fail_dma",
          [](DevCtl& c, uint32_t skip, uint32_t count) {
            CtlResult r{};
            CtlCall(c, [&] { return c.FailDma(skip, count, &r); });
            return ToResult(r);
          },
          py::arg("skip"), py::arg("count"))
      .def(
          "set_events",
          [](DevCtl& c, uint32_t mask) {
            CtlResult r{};
            CtlCall(c, [&] { return c.SetEvents(mask, &r); });
            return ToResult(r);
          },
          py::arg("mask"))
      .def("release",
           [](DevCtl& c) {
             CtlResult r{};
             CtlCall(c, [&] { return c.Release(&r); });
             return ToResult(r);
           })
      .def("counters",
           [](DevCtl& c) {
             std::vector<uint64_t> out;
             CtlCall(c, [&] { return c.Counters(&out); });
             return out;
           })
      .def("tlb",
           [](DevCtl& c) {
             std::vector<CtlTlbEntry> entries;
             CtlCall(c, [&] { return c.Tlb(&entries); });
             py::list out;
             for (const CtlTlbEntry& e : entries) {
               out.append(Devctl().attr("TlbEntry")(e.va, e.target, e.pte, e.ctx, e.huge != 0,
                                                    e.stale != 0));
             }
             return out;
           })
      .def(
          "next_event",
          [](DevCtl& c, double timeout) {
            CtlEvent e{};
            CtlCall(c, [&] { return c.NextEvent(timeout, &e); });
            return ToEvent(e);
          },
          py::arg("timeout") = 10.0)
      .def_property_readonly(
          "events",
          [](DevCtl& c) {
            return ToEvents({c.events().begin(), c.events().end()});
          },
          "The queued events (a copy).")
      .def("clear_events", [](DevCtl& c) { c.events().clear(); })
      .def("close", &DevCtl::Close);
}

void BindVm(py::module_& m) {
  py::class_<VmConfig>(m, "VmConfig")
      .def(py::init([](std::filesystem::path qemu, std::filesystem::path kernel,
                       std::filesystem::path initramfs, std::filesystem::path workdir,
                       std::string name, std::string accel, int cpus, std::string memory,
                       int devices, std::string vram, std::string run, bool interactive,
                       std::vector<std::string> extra_append) {
             return VmConfig{qemu,   kernel,  initramfs, workdir, name,        accel,
                             cpus,   memory,  devices,   vram,    run,         interactive,
                             extra_append, /*snapshot_disk=*/{}};
           }),
           py::arg("qemu"), py::arg("kernel"), py::arg("initramfs"), py::arg("workdir"),
           py::arg("name") = "vm0", py::arg("accel") = "tcg", py::arg("cpus") = 2,
           py::arg("memory") = "2G", py::arg("devices") = 1, py::arg("vram") = "",
           py::arg("run") = "executor",
           py::arg("interactive") = false, py::arg("extra_append") = std::vector<std::string>{})
      .def_readwrite("qemu", &VmConfig::qemu)
      .def_readwrite("kernel", &VmConfig::kernel)
      .def_readwrite("initramfs", &VmConfig::initramfs)
      .def_readwrite("workdir", &VmConfig::workdir)
      .def_readwrite("name", &VmConfig::name)
      .def_readwrite("accel", &VmConfig::accel)
      .def_readwrite("cpus", &VmConfig::cpus)
      .def_readwrite("memory", &VmConfig::memory)
      .def_readwrite("devices", &VmConfig::devices)
      .def_readwrite("vram", &VmConfig::vram)
      .def_readwrite("run", &VmConfig::run)
      .def_readwrite("interactive", &VmConfig::interactive)
      .def_readwrite("extra_append", &VmConfig::extra_append);

  py::class_<proto::Ready>(m, "Ready")
      .def_readonly("version", &proto::Ready::version)
      .def_readonly("features", &proto::Ready::features)
      .def_readonly("kernel", &proto::Ready::kernel);

  py::class_<Vm>(m, "Vm", "One QEMU process; kill() (or dropping it) ends it.")
      .def(py::init<VmConfig>())
      .def_property_readonly("config", &Vm::config)
      .def("argv", &Vm::Argv)
      .def_property_readonly("console_log", &Vm::console_log)
      .def_property_readonly("stderr_log", &Vm::stderr_log)
      .def_property_readonly("socket_dir", &Vm::socket_dir)
      .def_property_readonly("qmp_socket", &Vm::qmp_socket)
      .def_property_readonly("pid", &Vm::pid)
      .def_property_readonly("ready", &Vm::ready)
      .def("start", [](Vm& vm) { RunnerCall([&](std::string* e) { return vm.Start(e); }); })
      .def(
          "__enter__",
          [](Vm& vm) -> Vm& {
            RunnerCall([&](std::string* e) { return vm.Start(e); });
            return vm;
          },
          py::return_value_policy::reference_internal, "Starts QEMU; the block's end kills it.")
      .def("__exit__", [](Vm& vm, const py::args&) { vm.Kill(); })
      .def("alive", &Vm::Alive)
      .def(
          "wait_exit",
          [](Vm& vm, std::optional<double> timeout) {
            py::gil_scoped_release release;
            return vm.WaitExit(timeout ? *timeout : -1);
          },
          py::arg("timeout"), "QEMU's exit status, or None if it still runs after `timeout` s")
      .def("kill", &Vm::Kill)
      .def("elapsed", &Vm::Elapsed)
      .def(
          "wait_ready",
          [](Vm& vm, double timeout) {
            RunnerCall([&](std::string* e) { return vm.WaitReady(timeout, e); });
            return vm.Elapsed();
          },
          py::arg("timeout"), "Seconds from QEMU's start to the executor's READY.")
      .def("ping",
           [](Vm& vm) {
             double seconds = 0;
             RunnerCall([&](std::string* e) { return vm.Ping(&seconds, e) == LinkStatus::kOk; });
             return seconds;
           })
      .def(
          "poweroff",
          [](Vm& vm, double timeout) {
            RunnerCall([&](std::string* e) { return vm.PowerOff(timeout, e); });
          },
          py::arg("timeout") = 60.0)
      .def(
          "devctl",
          [](Vm& vm, int index, double timeout) {
            std::shared_ptr<DevCtl> ctl;
            RunnerCall([&](std::string* e) {
              return (ctl = vm.ControlChannel(index, timeout, e)) != nullptr;
            });
            return ctl;
          },
          py::arg("index"), py::arg("timeout") = 10.0);
}

void BindRunner(py::module_& m) {
  py::enum_<Reset>(m, "Reset", "How a life that ended gives way to the next.")
      .value("REBOOT", Reset::kReboot)
      .value("SNAPSHOT", Reset::kSnapshot);

  py::class_<RunnerConfig>(m, "RunnerConfig")
      .def(py::init([](VmConfig vm, double boot_timeout, uint32_t op_timeout_ms,
                       uint32_t program_timeout_ms, bool cover, uint32_t cover_cap,
                       double result_slack, Reset reset) {
             RunnerConfig c{vm,    boot_timeout, op_timeout_ms, program_timeout_ms,
                            cover, cover_cap,    result_slack};
             c.reset = reset;
             return c;
           }),
           py::arg("vm"), py::arg("boot_timeout") = 300.0, py::arg("op_timeout_ms") = 5000,
           py::arg("program_timeout_ms") = 20000, py::arg("cover") = true,
           py::arg("cover_cap") = 65536, py::arg("result_slack") = 30.0,
           py::arg("reset") = Reset::kReboot)
      .def_readwrite("vm", &RunnerConfig::vm)
      .def_readwrite("boot_timeout", &RunnerConfig::boot_timeout)
      .def_readwrite("op_timeout_ms", &RunnerConfig::op_timeout_ms)
      .def_readwrite("program_timeout_ms", &RunnerConfig::program_timeout_ms)
      .def_readwrite("cover", &RunnerConfig::cover)
      .def_readwrite("cover_cap", &RunnerConfig::cover_cap)
      .def_readwrite("result_slack", &RunnerConfig::result_slack)
      .def_readwrite("reset", &RunnerConfig::reset)
      .def_readwrite("fresh_process", &RunnerConfig::fresh_process);

  py::class_<Life, std::shared_ptr<Life>>(m, "Life", "One boot of the VM.")
      .def(py::init([](int index, std::filesystem::path console_log) {
             auto life = std::make_shared<Life>();
             life->index = index;
             life->console_log = std::move(console_log);
             return life;
           }),
           py::arg("index"), py::arg("console_log"))
      .def_readonly("index", &Life::index)
      .def_readonly("console_log", &Life::console_log)
      .def_readonly("boot_seconds", &Life::boot_seconds)
      .def_readonly("restored", &Life::restored)
      .def_readonly("programs", &Life::programs)
      .def_readonly("end", &Life::end);

  py::enum_<Lost>(m, "Lost")
      .value("NONE", Lost::kNone)
      .value("NO_OUTPUT", Lost::kNoOutput)
      .value("EXECUTOR_LOST", Lost::kExecutorLost)
      .value("VM_LOST", Lost::kVmLost)
      .value("VM_FROZEN", Lost::kVmFrozen);

  py::class_<Outcome>(m, "Outcome")
      .def_readonly("id", &Outcome::id)
      .def_property_readonly(
          "result",
          [](const Outcome& o) -> py::object {
            if (!o.result) return py::none();
            return Bytes(o.result_payload.data(), o.result_payload.size());
          },
          "The RESULT payload, or None when the guest was lost before it answered.")
      .def_readonly("life", &Outcome::life)
      .def_readonly("lost", &Outcome::lost)
      .def_readonly("lost_kind", &Outcome::lost_kind)
      .def_property_readonly("console", [](const Outcome& o) { return Text(o.console); })
      .def_property_readonly("stale", [](const Outcome& o) { return ToEvents(o.stale); })
      .def_readonly("seconds", &Outcome::seconds);

  py::class_<Runner>(m, "Runner")
      .def(py::init([](RunnerConfig cfg, std::optional<py::function> log) {
             Log to_python;
             if (log) {
               to_python = [log = *log](const std::string& line) {
                 py::gil_scoped_acquire acquire;
                 log(line);
               };
             }
             return std::make_unique<Runner>(std::move(cfg), std::move(to_python));
           }),
           py::arg("config"), py::arg("log") = py::none())
      .def_property_readonly("config", &Runner::config, py::return_value_policy::reference_internal)
      .def_property_readonly("lives", &Runner::lives)
      .def_property_readonly("life", &Runner::life)
      .def_property_readonly("vm_pid",
                             [](Runner& r) -> std::optional<int> {
                               if (r.vm() == nullptr) return std::nullopt;
                               return r.vm()->pid();
                             })
      .def_property_readonly("qmp_socket",
                             [](Runner& r) -> std::optional<std::filesystem::path> {
                               if (r.vm() == nullptr) return std::nullopt;
                               return r.vm()->qmp_socket();
                             })
      .def("boot",
           [](Runner& r) {
             RunnerCall([&](std::string* e) { return r.Boot(e); });
             return r.life();
           })
      .def(
          "run",
          [](Runner& r, const py::bytes& program, const std::vector<uint64_t>& knobs) {
            const std::string bytes = program;
            const std::vector<uint8_t> binary(bytes.begin(), bytes.end());
            Outcome out;
            RunnerCall([&](std::string* e) { return r.Run(binary, knobs, &out, e); });
            return out;
          },
          py::arg("program"), py::arg("knobs") = std::vector<uint64_t>{})
      .def("ping",
           [](Runner& r) {
             double seconds = 0;
             RunnerCall([&](std::string* e) { return r.Ping(&seconds, e); });
             return seconds;
           })
      .def("end_life", &Runner::EndLife, py::arg("why"), py::call_guard<py::gil_scoped_release>())
      .def(
          "end_life_after_report",
          [](Runner& r, const Outcome& o, const std::string& title) {
            std::string console;
            {
              py::gil_scoped_release unlocked;
              console = r.EndLifeAfterReport(o, title);
            }
            return Text(console);
          },
          py::arg("outcome"), py::arg("title"))
      .def(
          "devctl",
          [](Runner& r, int index) {
            std::string error;
            std::shared_ptr<DevCtl> ctl = r.ControlChannel(index, &error);
            if (!ctl) throw RunnerError(error);
            return ctl;
          },
          py::arg("index"), "Device `index`'s control channel in the current life.")
      .def("close", &Runner::Close, py::call_guard<py::gil_scoped_release>());
}

// The text form, parsed and validated; ValueError("line:col: message").
Program ParseText(std::string_view text) {
  ParseError error;
  std::optional<Program> program = Parse(text, &error);
  if (!program) throw py::value_error(error.ToString());
  return std::move(*program);
}

Program DecodeBytes(const py::bytes& data) {
  const std::string_view bytes = data;
  return Decode(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

void BindProgram(py::module_& m) {
  m.def(
      "encode_program",
      [](std::string_view text) {
        const std::vector<uint8_t> bytes = Encode(ParseText(text));
        return Bytes(bytes.data(), bytes.size());
      },
      py::arg("text"),
      "The binary form of a text program; ValueError(\"line:col: message\") if it is not a "
      "valid program.");
  m.def(
      "decode_program", [](const py::bytes& data) { return Print(DecodeBytes(data)); },
      py::arg("data"),
      "The canonical text of the program `data` decodes to (\"\" for no op); every byte "
      "string decodes, so it never fails.");
  m.def(
      "format_program", [](std::string_view text) { return Print(ParseText(text)); },
      py::arg("text"),
      "The canonical text of a text program; ValueError(\"line:col: message\") if it is not "
      "a valid program.");
  m.def(
      "c_source",
      [](const py::bytes& data, const std::string& target, std::vector<uint64_t> knobs,
         uint64_t repeat, uint64_t program_timeout_ms) {
        CSourceOptions options;
        if (target != "svmdev" && target != "test_hmm") {
          throw py::value_error("target is svmdev or test_hmm, not '" + target + "'");
        }
        options.target = target == "svmdev" ? CTarget::kSvmdev : CTarget::kTestHmm;
        // The generator names each knob by its field.
        if (knobs.size() > KnobNames().size()) {
          throw py::value_error(std::to_string(knobs.size()) +
                                " knobs, but struct svmdev_knobs has " +
                                std::to_string(KnobNames().size()) + " fields");
        }
        options.knobs = std::move(knobs);
        options.repeat = repeat;
        options.program_timeout_ms = program_timeout_ms;
        std::string error;
        std::optional<std::string> source = GenerateC(DecodeBytes(data), options, &error);
        if (!source) throw py::value_error(error);
        return *source;
      },
      py::arg("data"), py::arg("target") = "svmdev", py::arg("knobs") = std::vector<uint64_t>{},
      py::arg("repeat") = 1, py::arg("program_timeout_ms") = CSourceOptions{}.program_timeout_ms,
      "The standalone C reproducer of the program `data` decodes to, as svmprog prog2c writes "
      "it. knobs: struct svmdev_knobs's fields in order, set on every driver file (none: "
      "empty); repeat: runs, 0 until killed. ValueError names an op the target cannot "
      "express.");
}

// An ExecResult as Python sees it: a dict of its fields, each op and mismatch a
// tuple of its fields in order.
using OpTuple = std::tuple<uint8_t, uint8_t, uint16_t, int32_t, int64_t, uint32_t>;
using MismatchTuple = std::tuple<uint32_t, uint16_t, uint16_t, uint32_t, uint8_t, uint8_t>;

py::dict ResultDict(const proto::ExecResult& r) {
  std::vector<OpTuple> ops;
  for (const proto::OpResult& o : r.ops) {
    ops.emplace_back(o.code, o.thread, o.flags, o.err, o.ret, o.duration_us);
  }
  std::vector<MismatchTuple> mismatches;
  for (const proto::Mismatch& x : r.mismatches) {
    mismatches.emplace_back(x.op, x.buffer, x.offset, x.page, x.expected, x.actual);
  }
  py::dict d;
  d["id"] = r.id;
  d["status"] = static_cast<uint32_t>(r.status);
  d["detail"] = r.detail;
  d["duration_us"] = r.duration_us;
  d["ops"] = ops;
  d["mismatches"] = mismatches;
  d["counters"] = r.counters;
  d["watchdog_deltas"] = r.watchdog_deltas;
  d["cover"] = r.cover;
  d["remote_cover"] = r.remote_cover;
  d["message"] = Text(r.message);
  return d;
}

proto::ExecResult ResultFromDict(const py::dict& d) {
  proto::ExecResult r;
  r.id = d["id"].cast<uint64_t>();
  r.status = static_cast<proto::Status>(d["status"].cast<uint32_t>());
  r.detail = d["detail"].cast<int32_t>();
  r.duration_us = d["duration_us"].cast<uint32_t>();
  for (const auto& [code, thread, flags, err, ret, us] : d["ops"].cast<std::vector<OpTuple>>()) {
    r.ops.push_back({code, thread, flags, err, ret, us});
  }
  for (const auto& [op, buffer, offset, page, expected, actual] :
       d["mismatches"].cast<std::vector<MismatchTuple>>()) {
    r.mismatches.push_back({op, buffer, offset, page, expected, actual});
  }
  r.counters = d["counters"].cast<std::vector<uint64_t>>();
  r.watchdog_deltas = d["watchdog_deltas"].cast<std::vector<uint64_t>>();
  r.cover = d["cover"].cast<std::vector<uint64_t>>();
  r.remote_cover = d["remote_cover"].cast<std::vector<uint64_t>>();
  r.message = d["message"].cast<std::string>();
  return r;
}

void BindResult(py::module_& m) {
  m.def(
      "decode_result",
      [](const py::bytes& payload) {
        const std::string_view bytes = payload;
        proto::ExecResult r;
        if (!proto::Decode(std::vector<uint8_t>(bytes.begin(), bytes.end()), &r)) {
          throw py::value_error("bad RESULT: " + std::to_string(bytes.size()) +
                                " bytes, short, long or with a count past the end");
        }
        return ResultDict(r);
      },
      py::arg("payload"),
      "The fields of a RESULT payload: a dict with id, status, detail, duration_us, ops "
      "(tuples code, thread, flags, err, ret, duration_us), mismatches (tuples op, buffer, "
      "offset, page, expected, actual), counters, watchdog_deltas, cover, remote_cover and "
      "message (bytes that are not UTF-8 replaced). ValueError if it does not decode.");
  m.def(
      "encode_result",
      [](const py::dict& result) {
        const std::vector<uint8_t> bytes = proto::Encode(ResultFromDict(result));
        return Bytes(bytes.data(), bytes.size());
      },
      py::arg("result"), "The RESULT payload of a dict as decode_result gives it.");
}

}  // namespace
}  // namespace svmfuzz

PYBIND11_MODULE(svmfuzz_runner, m) {
  using namespace svmfuzz;
  m.doc() =
      "The svmfuzz host runner: QEMU, the executor's port, device control channels; the "
      "program codec: text and binary forms, C reproducers; and the RESULT codec.";
  static py::exception<RunnerError> error(
      m, "Error", py::module_::import("svmfuzz.errors").attr("SvmfuzzError").ptr());
  static py::exception<DevCtlError> devctl_error(m, "DevCtlError",
                                                 Devctl().attr("DevCtlError").ptr());
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const RunnerError& e) {
      error(e.what());
    } catch (const DevCtlError& e) {
      devctl_error(e.what());
    }
  });
  m.attr("EXECUTOR_PORT_NAME") = proto::kExecutorPortName;
  m.attr("EXECUTOR_EXITED") = proto::kExecutorExited;
  {
    py::dict features;  // of Ready.features
    for (size_t bit = 0; bit < std::size(proto::kFeatureNames); bit++)
      features[proto::kFeatureNames[bit]] = 1u << bit;
    m.attr("FEATURES") = features;
  }
  m.attr("KNOB_NAMES") = py::tuple(py::cast(std::vector<std::string>(
      std::begin(proto::kKnobNames), std::end(proto::kKnobNames))));
  m.def("kill_stray_vms", &KillStrayVms, py::arg("vm_workdir"),
        "Kills the QEMUs whose command line names vm_workdir; returns how many.");
  {
    namespace c = proto::counter;
    py::dict layout;
    layout["hw"] = c::kHw;
    layout["drv"] = c::kDrv;
    layout["mn_starts"] = c::kMnStarts;
    layout["mn_ends"] = c::kMnEnds;
    layout["mn_refused"] = c::kMnRefused;
    layout["balanced"] = c::kBalanced;
    layout["count"] = c::kCount;
    m.attr("COUNTER_LAYOUT") = layout;
  }
  BindDevCtl(m);
  BindVm(m);
  BindRunner(m);
  BindProgram(m);
  BindResult(m);
}
