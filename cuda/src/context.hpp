// What ncap keeps per CUDA device between calls: its own stream (ordered
// after each producer's through DLPack's stream handshake, never a
// device-wide sync), a device workspace that only grows, pinned host memory
// for the results, and a mutex so that concurrent calls take turns.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <mutex>

namespace ncap::cuda {

class DeviceContext {
 public:
  // The context of `device`, created on first use; `device` must be current
  // (see DeviceGuard). Contexts live until the process ends.
  static DeviceContext& of(int device);
  // Frees the cached memory of every device (the streams stay).
  static void release_all();
  // Cached device bytes of `device` (0 when it has no context yet).
  static size_t cached_bytes_of(int device);

  cudaStream_t stream() const { return stream_; }
  std::mutex& mutex() { return mutex_; }

  // At least `bytes` of device memory, reused between calls. Throws
  // WorkspaceError when it cannot be allocated (the old block freed first).
  char* workspace(size_t bytes);
  size_t workspace_bytes() const { return workspace_bytes_; }
  // At least `bytes` of pinned host memory for the results.
  char* staging(size_t bytes);
  void release();

 private:
  explicit DeviceContext(int device);
  int device_;
  cudaStream_t stream_ = nullptr;
  std::mutex mutex_;
  char* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  char* staging_ = nullptr;
  size_t staging_bytes_ = 0;
};

}  // namespace ncap::cuda
