// The host emulation declared in cuda_runtime.h (x86-64 Linux; development only).
#include "cuda_runtime.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#if !defined(__x86_64__)
#error "the CUDA host emulation switches fibers with x86-64 assembly"
#endif

// ncap_emulation_switch(save, load): saves the callee-saved registers, the
// SSE and x87 control words and the stack pointer to *save, then resumes the
// context whose stack pointer is `load`.
asm(R"(
.text
.globl ncap_emulation_switch
.type ncap_emulation_switch,@function
ncap_emulation_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size ncap_emulation_switch, .-ncap_emulation_switch

.globl ncap_emulation_trampoline
.type ncap_emulation_trampoline,@function
ncap_emulation_trampoline:
  andq $-16, %rsp
  call ncap_emulation_fiber_main
  ud2
.size ncap_emulation_trampoline, .-ncap_emulation_trampoline
)");

extern "C" void ncap_emulation_switch(void** save, void* load);
extern "C" void ncap_emulation_trampoline();
extern "C" void ncap_emulation_fiber_main();

namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "ncap CUDA emulation: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtol(v, nullptr, 10) : fallback;
}

int device_total() {
  static const int n = static_cast<int>(env_long("NCAP_CUDA_EMULATION_DEVICES", 2));
  return n;
}

size_t capacity_bytes() {
  static const size_t bytes = static_cast<size_t>(env_long("NCAP_CUDA_EMULATION_MEMORY_MIB", 1024)) << 20;
  return bytes;
}

thread_local cudaError_t last_error = cudaSuccess;
thread_local int current_device = 0;

cudaError_t fail(cudaError_t err) {
  last_error = err;
  return err;
}

struct Allocation {
  size_t bytes;
  int device;  // -1: pinned host memory
};

struct Memory {
  std::mutex mutex;
  std::map<uintptr_t, Allocation> blocks;
  std::vector<size_t> used;
  std::set<const void*> handles;  // streams and events
};

Memory& memory() {
  static Memory* m = [] {
    auto* mem = new Memory;
    mem->used.assign(device_total() > 0 ? device_total() : 0, 0);
    return mem;
  }();
  return *m;
}

// The allocation holding [p, p + bytes), or null.
const Allocation* find(const void* p, size_t bytes, uintptr_t* base = nullptr) {
  auto& blocks = memory().blocks;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  auto it = blocks.upper_bound(addr);
  if (it == blocks.begin()) return nullptr;
  --it;
  if (addr + bytes > it->first + it->second.bytes || (bytes == 0 && addr >= it->first + it->second.bytes))
    return nullptr;
  if (base) *base = it->first;
  return &it->second;
}

bool on_device(const void* p, size_t bytes) {
  const Allocation* a = find(p, bytes);
  return a && a->device >= 0;
}

cudaError_t allocate(void** ptr, size_t bytes, int device) {
  if (!ptr) return fail(cudaErrorInvalidValue);
  *ptr = nullptr;
  if (device_total() <= 0) return fail(cudaErrorNoDevice);
  if (bytes == 0) return cudaSuccess;
  std::lock_guard<std::mutex> lock(memory().mutex);
  if (device >= 0 && (bytes > capacity_bytes() || memory().used[device] + bytes > capacity_bytes()))
    return fail(cudaErrorMemoryAllocation);
  const size_t rounded = (bytes + 255) / 256 * 256;
  void* p = std::aligned_alloc(256, rounded);
  if (!p) return fail(cudaErrorMemoryAllocation);
  memory().blocks[reinterpret_cast<uintptr_t>(p)] = {bytes, device};
  if (device >= 0) memory().used[device] += bytes;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t release(void* ptr, bool pinned) {
  if (!ptr) return cudaSuccess;
  if (device_total() <= 0) return fail(cudaErrorNoDevice);
  std::lock_guard<std::mutex> lock(memory().mutex);
  auto it = memory().blocks.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == memory().blocks.end() || (it->second.device < 0) != pinned) return fail(cudaErrorInvalidValue);
  if (it->second.device >= 0) memory().used[it->second.device] -= it->second.bytes;
  memory().blocks.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

bool valid_stream(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return true;
  std::lock_guard<std::mutex> lock(memory().mutex);
  return memory().handles.count(s) > 0;
}

// ---- fibers: one per CUDA thread of the running block ----

constexpr size_t kStackBytes = 64 * 1024;

struct Fiber {
  void* sp = nullptr;
  bool done = false;
  unsigned long barriers = 0;
  ncap_emulation::ThreadIndex index;
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<std::unique_ptr<char[]>> stacks;
  void* scheduler_sp = nullptr;
  Fiber* running = nullptr;
  const std::function<void()>* body = nullptr;
};

thread_local Block* active_block = nullptr;

void run_block(Block& blk, const ncap_emulation::ThreadIndex& first, unsigned threads) {
  while (blk.stacks.size() < threads) blk.stacks.emplace_back(new char[kStackBytes]);
  blk.fibers.assign(threads, Fiber{});
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = blk.fibers[t];
    f.index = first;
    f.index.thread = {t % first.block_dim.x, (t / first.block_dim.x) % first.block_dim.y,
                      t / (first.block_dim.x * first.block_dim.y)};
    // The frame ncap_emulation_switch pops: control words, six registers, then the
    // return address (the trampoline); 16-byte aligned from the top.
    auto* top = reinterpret_cast<uint64_t*>(blk.stacks[t].get() + kStackBytes);
    uint64_t* sp = top - 2;
    sp[0] = reinterpret_cast<uint64_t>(&ncap_emulation_trampoline);
    sp -= 6;
    std::memset(sp, 0, 6 * sizeof(uint64_t));
    sp -= 1;
    const uint32_t mxcsr = 0x1F80, fpu_cw = 0x037F;
    std::memcpy(reinterpret_cast<char*>(sp), &mxcsr, 4);
    std::memcpy(reinterpret_cast<char*>(sp) + 4, &fpu_cw, 4);
    f.sp = sp;
  }
  for (;;) {
    unsigned done = 0, waiting = 0;
    for (Fiber& f : blk.fibers) {
      if (f.done) continue;
      blk.running = &f;
      ncap_emulation_switch(&blk.scheduler_sp, f.sp);
      blk.running = nullptr;
      if (f.done) ++done;
      else ++waiting;
    }
    if (waiting == 0) break;
    unsigned finished = 0;
    for (const Fiber& f : blk.fibers) finished += f.done;
    if (finished > 0) die("__syncthreads() was not reached by every thread of the block");
    const unsigned long b = blk.fibers[0].barriers;
    for (const Fiber& f : blk.fibers)
      if (f.barriers != b) die("threads of a block are waiting at different __syncthreads() calls");
    (void)done;
  }
}

std::mutex launch_mutex;  // one kernel at a time: __shared__ storage is static

}  // namespace

extern "C" void ncap_emulation_fiber_main() {
  Block& blk = *active_block;
  (*blk.body)();
  blk.running->done = true;
  void* unused = nullptr;
  ncap_emulation_switch(&unused, blk.scheduler_sp);
  die("a finished fiber was resumed");
}

namespace ncap_emulation {

const ThreadIndex& current_thread() {
  if (!active_block || !active_block->running) die("threadIdx/blockIdx read outside a kernel");
  return active_block->running->index;
}

void syncthreads() {
  if (!active_block || !active_block->running) die("__syncthreads() called outside a kernel");
  Fiber& f = *active_block->running;
  ++f.barriers;
  ncap_emulation_switch(&f.sp, active_block->scheduler_sp);
}

void launch(dim3 grid, dim3 block, cudaStream_t stream, const std::function<void()>& body) {
  if (device_total() <= 0) {
    fail(cudaErrorNoDevice);
    return;
  }
  if (!valid_stream(stream)) {
    fail(cudaErrorInvalidResourceHandle);
    return;
  }
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
    fail(cudaErrorInvalidConfiguration);
    return;
  }
  std::lock_guard<std::mutex> lock(launch_mutex);
  Block blk;
  blk.body = &body;
  Block* outer = active_block;
  active_block = &blk;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        ThreadIndex first;
        first.block = {x, y, z};
        first.block_dim = block;
        first.grid_dim = grid;
        run_block(blk, first, static_cast<unsigned>(threads));
      }
  active_block = outer;
}

}  // namespace ncap_emulation

// ---- the runtime API ----

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorDevicesUnavailable: return "cudaErrorDevicesUnavailable";
    case cudaErrorSystemDriverMismatch: return "cudaErrorSystemDriverMismatch";
    case cudaErrorCompatNotSupportedOnDevice: return "cudaErrorCompatNotSupportedOnDevice";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return cudaGetErrorName(e);
  }
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() { return last_error; }

// The emulated runtime and driver say CUDA 13.0 (no driver when there are no devices).
cudaError_t cudaRuntimeGetVersion(int* version) {
  if (!version) return fail(cudaErrorInvalidValue);
  *version = 13000;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* version) {
  if (!version) return fail(cudaErrorInvalidValue);
  *version = device_total() > 0 ? 13000 : 0;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue);
  *count = 0;
  if (device_total() <= 0) return fail(cudaErrorNoDevice);
  *count = device_total();
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue);
  if (device_total() <= 0) return fail(cudaErrorNoDevice);
  *device = current_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device_total() <= 0) return fail(cudaErrorNoDevice);
  if (device < 0 || device >= device_total()) return fail(cudaErrorInvalidDevice);
  current_device = device;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() { return device_total() > 0 ? cudaSuccess : fail(cudaErrorNoDevice); }

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (!free_bytes || !total_bytes) return fail(cudaErrorInvalidValue);
  if (device_total() <= 0) return fail(cudaErrorNoDevice);
  std::lock_guard<std::mutex> lock(memory().mutex);
  *total_bytes = capacity_bytes();
  *free_bytes = capacity_bytes() - memory().used[current_device];
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) { return allocate(ptr, bytes, current_device); }
cudaError_t cudaFree(void* ptr) { return release(ptr, false); }
cudaError_t cudaMallocHost(void** ptr, size_t bytes) { return allocate(ptr, bytes, -1); }
cudaError_t cudaFreeHost(void* ptr) { return release(ptr, true); }

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* ptr) {
  if (!attributes) return fail(cudaErrorInvalidValue);
  if (device_total() <= 0) return fail(cudaErrorNoDevice);
  std::lock_guard<std::mutex> lock(memory().mutex);
  const Allocation* a = find(ptr, 0);
  *attributes = {cudaMemoryTypeUnregistered, -2, nullptr, const_cast<void*>(ptr)};
  if (a && a->device >= 0) *attributes = {cudaMemoryTypeDevice, a->device, const_cast<void*>(ptr), nullptr};
  if (a && a->device < 0) *attributes = {cudaMemoryTypeHost, current_device, const_cast<void*>(ptr), const_cast<void*>(ptr)};
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (device_total() <= 0) return fail(cudaErrorNoDevice);
  if (!valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (bytes == 0) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(memory().mutex);
    const bool src_dev = on_device(src, bytes), dst_dev = on_device(dst, bytes);
    const bool ok = kind == cudaMemcpyDefault ||
                    (kind == cudaMemcpyHostToDevice && dst_dev && !on_device(src, 1)) ||
                    (kind == cudaMemcpyDeviceToHost && src_dev && !on_device(dst, 1)) ||
                    (kind == cudaMemcpyDeviceToDevice && src_dev && dst_dev) ||
                    (kind == cudaMemcpyHostToHost && !on_device(src, 1) && !on_device(dst, 1));
    if (!ok) return fail(cudaErrorInvalidValue);
  }
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  if (device_total() <= 0) return fail(cudaErrorNoDevice);
  if (!valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (bytes == 0) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(memory().mutex);
    if (!on_device(ptr, bytes)) return fail(cudaErrorInvalidValue);
  }
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}

namespace {
template <typename Handle>
cudaError_t create_handle(Handle* out) {
  if (!out) return fail(cudaErrorInvalidValue);
  if (device_total() <= 0) return fail(cudaErrorNoDevice);
  auto* h = reinterpret_cast<Handle>(new char[1]);
  std::lock_guard<std::mutex> lock(memory().mutex);
  memory().handles.insert(h);
  *out = h;
  return cudaSuccess;
}

template <typename Handle>
cudaError_t destroy_handle(Handle h) {
  std::lock_guard<std::mutex> lock(memory().mutex);
  if (!memory().handles.erase(h)) return fail(cudaErrorInvalidResourceHandle);
  delete[] reinterpret_cast<char*>(h);
  return cudaSuccess;
}

cudaError_t check_handle(const void* h) {
  if (device_total() <= 0) return fail(cudaErrorNoDevice);
  std::lock_guard<std::mutex> lock(memory().mutex);
  return memory().handles.count(h) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
}  // namespace

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) { return create_handle(stream); }
cudaError_t cudaStreamDestroy(cudaStream_t stream) { return destroy_handle(stream); }
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (device_total() <= 0) return fail(cudaErrorNoDevice);
  return valid_stream(stream) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
  if (!valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
  return check_handle(event);
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned) { return create_handle(event); }
cudaError_t cudaEventDestroy(cudaEvent_t event) { return destroy_handle(event); }
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
  return check_handle(event);
}
