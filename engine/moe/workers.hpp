// The engine's seam for multi-core boards. The core never creates threads: a platform
// that has them hands the engine a Workers (engine/platform/thread_pool.hpp on Linux),
// and each large weight product is split by rows across them. Bare metal has none, and
// the engine runs every product on the calling core.
#pragma once

namespace moe {

struct Workers {
  // `run` calls task(ctx, part, parts) once for every part in [0, parts), on whichever
  // thread is free (the caller takes parts too), and returns when all are done. A task
  // must not allocate.
  // - parts > 0: the caller's count (at most kMaxParts). A task whose work comes in a few
  //   whole units (a token's experts) takes one part per unit, so that a thread another
  //   process holds up leaves the units it has not begun to the others.
  // - kPoolParts: the pool's choice, which may exceed the threads: the task must divide
  //   its work by part and parts alone.
  using Task = void (*)(void* ctx, int part, int parts);
  static constexpr int kPoolParts = 0;
  static constexpr int kMaxParts = 1 << 15;
  void* pool = nullptr;
  void (*run)(void* pool, Task task, void* ctx, int parts) = nullptr;
  int threads = 1;  // the caller included
};

}  // namespace moe
