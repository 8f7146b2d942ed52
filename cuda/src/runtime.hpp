// The CUDA runtime as ncap uses it: every failed call becomes an exception
// *and* the runtime's last-error state is cleared, so that a handled failure
// (an allocation that did not fit, a missing device) never resurfaces as a
// stale error in a later, unrelated call.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace ncap::cuda {

// No usable GPU or driver (the module imports fine without one; the first
// runtime call lands here). The message starts with "no CUDA device: ".
class NoDeviceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws (NoDeviceError, or std::runtime_error naming `what`) if err is not
// cudaSuccess, after clearing the last-error state.
void check(cudaError_t err, const char* what);

// The visible devices, 0 when there is no GPU or driver (clears the error).
int device_count();
// The visible devices; throws NoDeviceError when there are none.
int require_devices();

// Makes `device` current for the scope and restores the caller's current
// device on exit, so that a framework's later allocations in this thread land
// where they did before the call.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
  bool changed_ = false;
};

// cudaMalloc that throws WorkspaceError (a Python MemoryError) with
// `purpose` and the size in the message, the runtime's error cleared.
void* device_alloc(size_t bytes, const char* purpose);
void device_free(void* ptr);
void* pinned_alloc(size_t bytes, const char* purpose);
void pinned_free(void* ptr);

// Copies device -> host on `stream` (counted, see call_counts()).
void copy_to_host_async(void* host, const void* device, size_t bytes, cudaStream_t stream);

// Waits for every stream of the current device (counted): used only when a
// producer refused DLPack's stream handshake.
void synchronize_device();

// Testing hook: the next `count` device allocations request an impossible
// size, so that the runtime itself fails them (and sets its last error).
void fail_next_allocations(int count);

// Counters of the expensive runtime calls, for tests of the call pattern.
struct CallCounts {
  long long device_allocations = 0;
  long long device_to_host_copies = 0;
  long long device_synchronizations = 0;
  long long stream_synchronizations = 0;
};
CallCounts call_counts();
void count_stream_synchronization();

}  // namespace ncap::cuda
