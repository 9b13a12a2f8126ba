// A static pool of worker threads for the engine's Workers seam: the threads are
// created once, here, and each task after that is handed over through two atomics, so a
// generated token neither creates a thread nor allocates (test_zero_alloc proves it).
//
// Between tasks a worker spins briefly (a decode issues ~10 products per layer,
// microseconds apart: sleeping between them would cost more than the products), then
// yields its core, then sleeps in atomic::wait so an idle engine burns no core.
#pragma once

#include <atomic>
#include <thread>

#include "moe/workers.hpp"

namespace moe::platform {

class ThreadPool {
 public:
  static constexpr int kMaxThreads = 256;
  // `threads` counts the calling thread: ThreadPool(2) starts one worker (at most
  // kMaxThreads in all).
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  Workers workers() { return Workers{this, &ThreadPool::run, parts_}; }
  int threads() const { return parts_; }

 private:
  static void run(void* pool, Workers::Task task, void* ctx);
  void worker_loop(int part);

  int parts_;
  std::thread threads_[kMaxThreads - 1];  // [0, parts_ - 1) started
  Workers::Task task_ = nullptr;
  void* ctx_ = nullptr;
  std::atomic<int> generation_{0};  // bumped once per task (and at shutdown)
  std::atomic<int> pending_{0};     // workers still running the current task
  std::atomic<bool> stop_{false};
};

}  // namespace moe::platform
