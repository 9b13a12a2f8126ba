#include "platform/cpu_cores.hpp"

#include <sched.h>

#include <cstdio>
#include <set>
#include <thread>
#include <utility>

namespace moe::platform {

namespace {

bool read_int(const char* path, int& out) {
  std::FILE* f = std::fopen(path, "r");
  if (f == nullptr) return false;
  const bool ok = std::fscanf(f, "%d", &out) == 1;
  std::fclose(f);
  return ok;
}

}  // namespace

int physical_cores() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
    const unsigned n = std::thread::hardware_concurrency();
    return n > 0 ? static_cast<int>(n) : 1;
  }
  std::set<std::pair<int, int>> cores;
  int cpus = 0;
  bool topology = true;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    ++cpus;
    char path[96];
    int package = 0, core = 0;
    std::snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
    const bool has_package = read_int(path, package);
    std::snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
    if (!read_int(path, core)) topology = false;
    cores.emplace(has_package ? package : 0, core);
  }
  const int n = topology ? static_cast<int>(cores.size()) : cpus;
  return n > 0 ? n : 1;
}

}  // namespace moe::platform
