// The engine's seam for multi-core boards. The core never creates threads: a platform
// that has them hands the engine a Workers (engine/platform/thread_pool.hpp on Linux),
// and each large weight product is split by rows across them. Bare metal has none, and
// the engine runs every product on the calling core.
#pragma once

namespace moe {

struct Workers {
  // `run` calls task(ctx, part, parts) once for every part in [0, parts), on whichever
  // thread is free (the caller takes parts too), and returns when all are done. `parts`
  // is the pool's choice and may exceed the threads: a task must divide its work by
  // part and parts alone. A task must not allocate.
  using Task = void (*)(void* ctx, int part, int parts);
  void* pool = nullptr;
  void (*run)(void* pool, Task task, void* ctx) = nullptr;
  int threads = 1;  // the caller included
};

}  // namespace moe
