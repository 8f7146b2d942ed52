#include "runtime.hpp"

#include <atomic>
#include <sstream>

#include "ncap/core.hpp"

namespace ncap::cuda {
namespace {

std::atomic<int> allocations_to_fail{0};
std::atomic<long long> allocations{0}, copies{0}, device_syncs{0}, stream_syncs{0};

bool means_no_device(cudaError_t err) {
  return err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver || err == cudaErrorInitializationError ||
         err == cudaErrorDevicesUnavailable || err == cudaErrorSystemDriverMismatch ||
         err == cudaErrorCompatNotSupportedOnDevice;
}

std::string mib(size_t bytes) {
  std::ostringstream os;
  os.precision(4);
  os << static_cast<double>(bytes) / (1024.0 * 1024.0) << " MiB";
  return os.str();
}

std::string cuda_version(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

int current_device_or(int fallback) {
  int device = fallback;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return fallback;
  }
  return device;
}

}  // namespace

void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // reported here, so it must not resurface in the next call
  if (means_no_device(err)) {
    int runtime = 0, driver = 0;
    if (cudaRuntimeGetVersion(&runtime) != cudaSuccess || cudaDriverGetVersion(&driver) != cudaSuccess)
      cudaGetLastError();
    throw NoDeviceError(std::string("no CUDA device: ") + cudaGetErrorString(err) + " (" + what +
                        "); the arrays say they live on a GPU, but the CUDA runtime cannot reach one. ncap's "
                        "CUDA module uses CUDA runtime " + cuda_version(runtime) + " and needs a driver for it (found: " +
                        (driver > 0 ? "one for CUDA " + cuda_version(driver) : std::string("none")) +
                        "); check nvidia-smi and CUDA_VISIBLE_DEVICES");
  }
  throw std::runtime_error(std::string("ncap CUDA error in ") + what + ": " + cudaGetErrorString(err) + " (" +
                           cudaGetErrorName(err) + ")");
}

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

int require_devices() {
  int count = 0;
  check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  if (count == 0) check(cudaErrorNoDevice, "cudaGetDeviceCount");
  return count;
}

DeviceGuard::DeviceGuard(int device) {
  check(cudaGetDevice(&previous_), "cudaGetDevice");
  if (previous_ != device) {
    check(cudaSetDevice(device), "cudaSetDevice");
    changed_ = true;
  }
}

DeviceGuard::~DeviceGuard() {
  if (changed_ && cudaSetDevice(previous_) != cudaSuccess) cudaGetLastError();
}

void* device_alloc(size_t bytes, const char* purpose) {
  if (bytes == 0) return nullptr;
  size_t request = bytes;
  int pending = allocations_to_fail.load();
  while (pending > 0 && !allocations_to_fail.compare_exchange_weak(pending, pending - 1)) {
  }
  if (pending > 0) request = size_t{1} << 62;  // no GPU has this: the runtime fails it for real
  void* ptr = nullptr;
  const cudaError_t err = cudaMalloc(&ptr, request);
  ++allocations;
  if (err == cudaSuccess) return ptr;
  if (err != cudaErrorMemoryAllocation) check(err, "cudaMalloc");
  cudaGetLastError();  // handled: a MemoryError, and the next call starts clean
  std::ostringstream os;
  os << "could not allocate " << mib(bytes) << " on CUDA device " << current_device_or(-1) << " for " << purpose
     << " (" << cudaGetErrorString(err) << ")";
  throw WorkspaceError(os.str());
}

void device_free(void* ptr) {
  if (ptr && cudaFree(ptr) != cudaSuccess) cudaGetLastError();
}

void* pinned_alloc(size_t bytes, const char* purpose) {
  if (bytes == 0) return nullptr;
  void* ptr = nullptr;
  const cudaError_t err = cudaMallocHost(&ptr, bytes);
  if (err == cudaSuccess) return ptr;
  if (err != cudaErrorMemoryAllocation) check(err, "cudaMallocHost");
  cudaGetLastError();
  throw WorkspaceError("could not allocate " + mib(bytes) + " of pinned host memory for " + purpose + " (" +
                       cudaGetErrorString(err) + ")");
}

void pinned_free(void* ptr) {
  if (ptr && cudaFreeHost(ptr) != cudaSuccess) cudaGetLastError();
}

void copy_to_host_async(void* host, const void* device, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  ++copies;
  check(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream), "copying the results to the host");
}

void synchronize_device() {
  ++device_syncs;
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

void fail_next_allocations(int count) { allocations_to_fail.store(count > 0 ? count : 0); }

void count_stream_synchronization() { ++stream_syncs; }

CallCounts call_counts() {
  CallCounts c;
  c.device_allocations = allocations.load();
  c.device_to_host_copies = copies.load();
  c.device_synchronizations = device_syncs.load();
  c.stream_synchronizations = stream_syncs.load();
  return c;
}

}  // namespace ncap::cuda
