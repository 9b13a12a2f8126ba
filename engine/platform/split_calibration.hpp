// Where a weight product stops being worth sharing on this machine: the hand-over to the
// pool's workers, measured, against what one core multiplies in that time.
#pragma once

#include "platform/thread_pool.hpp"

namespace moe::platform {

struct SplitCalibration {
  double handover_s = 0;         // median time of a task that does nothing, over the whole pool
  double macs_per_s = 0;         // one core, the engine's fastest weight product (int8 x int8 where the target has it)
  long min_macs_per_worker = 0;  // for Engine::set_workers
};

// Measures both on a product in cache (a few milliseconds: the same product on one core
// and shared by the pool) and sets the threshold to six times what one core multiplies
// during a hand-over (within 16K..256K): a product is split only when each worker's
// share takes clearly longer than handing it over. A pool of one thread gets 0.
SplitCalibration calibrate_split(ThreadPool& pool);

}  // namespace moe::platform
