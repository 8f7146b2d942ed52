// ncap's helper threads (see ncap/parallel.hpp).
#include "ncap/parallel.hpp"

#include "ncap/core.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define NCAP_HAVE_ATFORK 1
#endif
#if defined(__linux__)
#include <sched.h>
#endif

namespace ncap {
namespace {

std::atomic<bool> forked{false};
thread_local int slot_of_this_thread = 0;

#ifdef NCAP_HAVE_ATFORK
void on_fork_child() { forked.store(true, std::memory_order_relaxed); }

// Registered when the library is loaded, i.e. before any helper exists.
[[maybe_unused]] const bool registered = [] { return pthread_atfork(nullptr, nullptr, &on_fork_child) == 0; }();
#endif

int cpus_allowed() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

int configured_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const int n = std::atoi(env);  // "4" or "4,2" (OpenMP's nesting list): the first level
    if (n > 0) return n < kMaxThreads ? n : kMaxThreads;
  }
  return cpus_allowed();
}

// One parallel_for call. Shared with the helpers that join it, so that a helper
// waking up late finds the tasks gone and touches nothing of the caller's.
struct Job {
  detail::TaskRef task;
  int64_t n_tasks = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> finished{0};
  std::mutex mutex;
  std::condition_variable all_done;

  void work(int slot) {
    slot_of_this_thread = slot;
    for (int64_t t; (t = next.fetch_add(1)) < n_tasks;) {
      task(t);
      if (finished.fetch_add(1) + 1 == n_tasks) {
        std::lock_guard<std::mutex> lock(mutex);
        all_done.notify_all();
      }
    }
  }
};

class Helpers {
 public:
  void run(int64_t n_tasks, int threads, detail::TaskRef task) {
    auto job = std::make_shared<Job>();
    job->task = task;
    job->n_tasks = n_tasks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (static_cast<int>(threads_.size()) < threads - 1) {
        try {
          threads_.emplace_back([this] { loop(); });
        } catch (...) {  // no more threads: fewer helpers, same results
          break;
        }
      }
      current_ = job;
      seats_ = std::min(threads - 1, static_cast<int>(threads_.size()));
      ++generation_;
    }
    wake_.notify_all();
    job->work(0);  // the caller takes every task no helper has taken
    slot_of_this_thread = 0;
    if (job->finished.load() < n_tasks) {  // only tasks that a running helper holds
      std::unique_lock<std::mutex> lock(job->mutex);
      job->all_done.wait(lock, [&] { return job->finished.load() == n_tasks; });
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (current_ == job) {
      current_.reset();
      seats_ = 0;
    }
  }

 private:
  void loop() {
    uint64_t seen = 0;
    int slot = 0;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen && seats_ > 0 && current_; });
        seen = generation_;
        slot = seats_--;  // 1 .. threads-1, distinct within the job
        job = current_;
      }
      job->work(slot);
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::thread> threads_;  // sleep between calls; never joined (live until exit)
  std::shared_ptr<Job> current_;
  uint64_t generation_ = 0;
  int seats_ = 0;
};

Helpers& helpers() {
  static Helpers* h = new Helpers;  // never destroyed: its threads may outlive static destruction
  return *h;
}

}  // namespace

bool in_forked_child() { return forked.load(std::memory_order_relaxed); }

int task_slot() { return slot_of_this_thread; }

int available_threads() {
  if (in_forked_child()) return 1;
  static const int n = configured_threads();
  return n;
}

namespace detail {
void run_parallel(int64_t n_tasks, int threads, TaskRef task) {
  if (in_forked_child() || threads <= 1) {
    for (int64_t t = 0; t < n_tasks; ++t) task(t);
    return;
  }
  helpers().run(n_tasks, threads, task);
}
}  // namespace detail

}  // namespace ncap
