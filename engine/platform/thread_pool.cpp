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
constexpr uint64_t kPartMask = 0xffffu;
constexpr int kPartsShift = 16;
static_assert(moe::Workers::kMaxParts <= kPartMask);
static_assert(moe::platform::ThreadPool::kMaxThreads * moe::platform::ThreadPool::kMaxPartsPerThread <=
              moe::Workers::kMaxParts);
}  // namespace

namespace {
int clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
}  // namespace

ThreadPool::ThreadPool(int threads, int parts_per_thread)
    : threads_count_(clamp(threads, 1, kMaxThreads)),
      parts_(threads_count_ == 1 ? 1 : threads_count_ * clamp(parts_per_thread, 1, kMaxPartsPerThread)) {
  for (int i = 0; i + 1 < threads_count_; ++i) threads_[i] = std::thread([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (int i = 0; i + 1 < threads_count_; ++i) threads_[i].join();
}

void ThreadPool::run(void* pool, Workers::Task task, void* ctx, int parts) {
  auto& self = *static_cast<ThreadPool*>(pool);
  parts = parts == Workers::kPoolParts ? self.parts_ : clamp(parts, 1, Workers::kMaxParts);
  if (self.threads_count_ == 1) {
    for (int part = 0; part < parts; ++part) task(ctx, part, parts);
    return;
  }
  // Every part of the previous task is done (below), so no thread reads task_ or ctx_
  // for it any more: a thread reads them only while a part is left to claim.
  self.task_.store(task, std::memory_order_relaxed);
  self.ctx_.store(ctx, std::memory_order_relaxed);
  self.done_.store(0, std::memory_order_relaxed);
  const uint64_t number = (self.claim_.load(std::memory_order_relaxed) >> 32) + 1;
  // publishes the task
  self.claim_.store(number << 32 | static_cast<uint64_t>(parts) << kPartsShift, std::memory_order_release);
  self.generation_.fetch_add(1, std::memory_order_release);
  self.generation_.notify_all();  // cheap when no worker sleeps
  self.run_parts();
  for (int spins = 0; self.done_.load(std::memory_order_acquire) != parts; ++spins) {
    if (spins < kPauses) MOE_CPU_RELAX();
    else std::this_thread::yield();  // a worker holding a part is not running: let it
  }
}

// Claims and runs parts of the current task until none is left. A part is claimed by
// advancing claim_ from the value the task and context were read under: when that
// succeeds, the task was still the current one.
void ThreadPool::run_parts() {
  uint64_t claim = claim_.load(std::memory_order_acquire);
  const auto parts_of = [](uint64_t c) { return static_cast<int>(c >> kPartsShift & kPartMask); };
  while (static_cast<int>(claim & kPartMask) < parts_of(claim)) {
    const Workers::Task task = task_.load(std::memory_order_relaxed);
    void* ctx = ctx_.load(std::memory_order_relaxed);
    if (!claim_.compare_exchange_weak(claim, claim + 1, std::memory_order_acq_rel, std::memory_order_acquire))
      continue;  // claim now holds the current value
    task(ctx, static_cast<int>(claim & kPartMask), parts_of(claim));
    done_.fetch_add(1, std::memory_order_release);
    claim = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::worker_loop() {
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
    run_parts();
  }
}

}  // namespace moe::platform
