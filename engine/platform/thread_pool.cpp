#include "platform/thread_pool.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MOE_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__) || defined(__ARM_ARCH_7A__)
#define MOE_CPU_RELAX() asm volatile("yield")
#else
#define MOE_CPU_RELAX() ((void)0)
#endif

namespace moe::platform {

namespace {
// Waiting, in three steps: pause instructions (tens of microseconds: the next product
// is usually that close; fewer pauses let the worker reach sched_yield between
// products: bench/README.md, "Design decisions"), then yielding the core (when
// there are more threads than cores, a spinning thread would hold up the one doing the
// work), then sleeping in the kernel.
constexpr int kPauses = 2048;
constexpr int kYields = 4096;
}  // namespace

ThreadPool::ThreadPool(int threads) : parts_(threads < 1 ? 1 : threads > kMaxThreads ? kMaxThreads : threads) {
  for (int part = 1; part < parts_; ++part) threads_[part - 1] = std::thread([this, part] { worker_loop(part); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (int i = 0; i + 1 < parts_; ++i) threads_[i].join();
}

void ThreadPool::run(void* pool, Workers::Task task, void* ctx) {
  auto& self = *static_cast<ThreadPool*>(pool);
  if (self.parts_ == 1) return task(ctx, 0, 1);
  self.task_ = task;
  self.ctx_ = ctx;
  self.pending_.store(self.parts_ - 1, std::memory_order_relaxed);
  self.generation_.fetch_add(1, std::memory_order_release);  // publishes task_, ctx_
  self.generation_.notify_all();                             // cheap when no worker sleeps
  task(ctx, 0, self.parts_);
  for (int spins = 0; self.pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < kPauses) MOE_CPU_RELAX();
    else std::this_thread::yield();  // a worker is not running: let it
  }
}

void ThreadPool::worker_loop(int part) {
  int seen = 0;
  for (;;) {
    int now = generation_.load(std::memory_order_acquire);
    for (int spins = 0; now == seen; now = generation_.load(std::memory_order_acquire), ++spins) {
      if (spins < kPauses) {
        MOE_CPU_RELAX();
      } else if (spins < kPauses + kYields) {
        std::this_thread::yield();
      } else {
        generation_.wait(seen, std::memory_order_acquire);
        spins = 0;
      }
    }
    seen = now;
    if (stop_.load(std::memory_order_relaxed)) return;
    task_(ctx_, part, parts_);
    pending_.fetch_sub(1, std::memory_order_release);
  }
}

}  // namespace moe::platform
