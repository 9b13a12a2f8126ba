// A static pool of worker threads for the engine's Workers seam: the threads are
// created once, here, and each task after that is handed over through atomics, so a
// generated token neither creates a thread nor allocates (test_zero_alloc proves it).
//
// A task is cut into parts (the caller's count, or one per thread by default), and each
// thread, the caller included, claims the next unclaimed part until none is left: a
// worker that the OS has not scheduled (another process holds its core) leaves its part
// to the others instead of holding up the task. More parts per thread also let a slowed
// thread take fewer; on the machines measured one per thread decoded fastest
// (bench/README.md, "Design decisions").
//
// Between tasks a worker spins briefly (a decode issues ~10 products per layer,
// microseconds apart: sleeping between them would cost more than the products), then
// yields its core, then sleeps in atomic::wait so an idle engine burns no core.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

#include "moe/workers.hpp"

namespace moe::platform {

class ThreadPool {
 public:
  static constexpr int kMaxThreads = 256;
  static constexpr int kMaxPartsPerThread = 64;
  // `threads` counts the calling thread: ThreadPool(2) starts one worker (at most
  // kMaxThreads in all). A task run with Workers::kPoolParts is cut into
  // threads * parts_per_thread parts.
  explicit ThreadPool(int threads, int parts_per_thread = 1);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  Workers workers() { return Workers{this, &ThreadPool::run, threads_count_}; }
  int threads() const { return threads_count_; }
  // How many parts a task run with Workers::kPoolParts is cut into (1 without workers).
  int parts() const { return parts_; }

 private:
  static void run(void* pool, Workers::Task task, void* ctx, int parts);
  void run_parts();
  void worker_loop();

  int threads_count_;
  int parts_;
  std::thread threads_[kMaxThreads - 1];  // [0, threads_count_ - 1) started
  std::atomic<Workers::Task> task_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  // (task number << 32) | (the task's parts << 16) | the next unclaimed part
  std::atomic<uint64_t> claim_{0};
  std::atomic<int> done_{0};        // parts of the current task finished
  std::atomic<int> generation_{0};  // bumped once per task (and at shutdown): wakes workers
  std::atomic<bool> stop_{false};
};

}  // namespace moe::platform
