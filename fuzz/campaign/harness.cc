#include "campaign/harness.h"

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "campaign/campaign.h"

namespace svmfuzz::campaign {
namespace {

std::unique_ptr<Campaign>& Current() {
  static std::unique_ptr<Campaign> campaign;
  return campaign;
}

void Say(const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); }

// Both engines leave through exit() when their time is up.
void End() {
  if (Current()) Current()->Finish();
}

[[noreturn]] void Fail(const std::string& why) {
  Say("campaign: " + why);
  std::fflush(stderr);
  std::exit(1);
}

Campaign& Start(const char* engine) {
  std::unique_ptr<Campaign>& campaign = Current();
  if (campaign) return *campaign;
  const char* path = std::getenv(kConfigEnv);
  if (path == nullptr || *path == '\0') {
    Fail(std::string(kConfigEnv) + " does not name a campaign configuration (svmfuzz fuzz writes one)");
  }
  Config cfg;
  std::string error;
  if (!LoadConfig(path, &cfg, &error)) Fail(error);
  if (cfg.engine.empty()) cfg.engine = engine;
  // The oracles triage uses; a build's own checkout when svmfuzz fuzz did not say.
  if (cfg.pyharness.empty()) cfg.pyharness = SVMFUZZ_PYHARNESS_DIR;
  Judge judge = PythonJudge(cfg.pyharness, &error);
  if (!judge) Fail(error);
  campaign = Campaign::Open(std::move(cfg), Say, std::move(judge), &error);
  if (!campaign) Fail(error);
  std::atexit(End);
  return *campaign;
}

}  // namespace

void RunInput(const uint8_t* data, size_t size, uint8_t* map, size_t map_size,
              const char* engine) {
  Campaign& campaign = Start(engine);
  std::string error;
  if (!campaign.Execute(data, size, map, map_size, &error)) {
    Fail("the guest did not boot, " + std::to_string(campaign.stats().boot_failures) +
         " time(s) in a row: " + error);
  }
}

}  // namespace svmfuzz::campaign
