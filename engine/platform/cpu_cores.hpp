// How many cores this process may use, counted as a board user means it: physical
// cores, not hardware threads (two SMT threads of one core share its vector units and
// its bandwidth, and the engine's products are bound by both).
#pragma once

namespace moe::platform {

// Physical cores among the CPUs this process may run on (its affinity mask): distinct
// (package, core) pairs from /sys/devices/system/cpu/cpuN/topology. Where that is not
// readable, the allowed CPUs; at least 1.
int physical_cores();

}  // namespace moe::platform
