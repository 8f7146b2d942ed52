#include "context.hpp"

#include <memory>
#include <vector>

#include "runtime.hpp"

namespace ncap::cuda {
namespace {

// Never destroyed: at process exit the CUDA runtime may already be gone.
std::mutex& registry_mutex() {
  static auto* m = new std::mutex;
  return *m;
}
std::vector<DeviceContext*>& registry() {
  static auto* r = new std::vector<DeviceContext*>;
  return *r;
}

// Whole pages: a workspace reused across calls need not be tight.
size_t rounded(size_t bytes) {
  constexpr size_t kStep = size_t{1} << 12;
  return (bytes + kStep - 1) / kStep * kStep;
}

}  // namespace

DeviceContext::DeviceContext(int device) : device_(device) {
  check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "creating ncap's CUDA stream");
}

DeviceContext& DeviceContext::of(int device) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  auto& contexts = registry();
  if (static_cast<int>(contexts.size()) <= device) contexts.resize(device + 1, nullptr);
  if (!contexts[device]) contexts[device] = new DeviceContext(device);
  return *contexts[device];
}

void DeviceContext::release_all() {
  std::vector<DeviceContext*> contexts;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    contexts = registry();
  }
  for (DeviceContext* c : contexts) {
    if (!c) continue;
    std::lock_guard<std::mutex> lock(c->mutex());
    DeviceGuard guard(c->device_);
    c->release();
  }
}

size_t DeviceContext::cached_bytes_of(int device) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  const auto& contexts = registry();
  if (device < 0 || device >= static_cast<int>(contexts.size()) || !contexts[device]) return 0;
  return contexts[device]->workspace_bytes_;
}

char* DeviceContext::workspace(size_t bytes) {
  if (bytes <= workspace_bytes_) return workspace_;
  // Every call waits for its own work before it returns: nothing reads the old block.
  device_free(workspace_);
  workspace_ = nullptr;
  workspace_bytes_ = 0;
  const size_t want = rounded(bytes);
  workspace_ = static_cast<char*>(device_alloc(want, "ncap's working memory"));
  workspace_bytes_ = want;
  return workspace_;
}

char* DeviceContext::staging(size_t bytes) {
  if (bytes <= staging_bytes_) return staging_;
  pinned_free(staging_);
  staging_ = nullptr;
  staging_bytes_ = 0;
  const size_t want = rounded(bytes);
  staging_ = static_cast<char*>(pinned_alloc(want, "ncap's results"));
  staging_bytes_ = want;
  return staging_;
}

void DeviceContext::release() {
  device_free(workspace_);
  pinned_free(staging_);
  workspace_ = staging_ = nullptr;
  workspace_bytes_ = staging_bytes_ = 0;
}

}  // namespace ncap::cuda
