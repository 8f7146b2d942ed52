// DeviceArray: a host array copied to GPU memory and exported through DLPack,
// so that tests and the GPU check can feed the CUDA path without PyTorch or
// CuPy, with any strides, offsets, alignment and producer behaviour they need.
#include "device_array.hpp"

#include <cuda_runtime.h>
#include <pybind11/numpy.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "../src/kernels.hpp"
#include "../src/runtime.hpp"
#include "dlpack_min.h"

namespace ncap::cuda {
namespace {

struct Counters {
  std::atomic<long> exports{0}, releases{0};
};

// The bytes, on the device (or in host memory, labelled CUDA), plus the
// producer's own stream for delayed writes.
struct Storage {
  int device = 0;
  bool host_memory = false;
  char* base = nullptr;  // 256-byte aligned
  size_t bytes = 0;
  char* pinned = nullptr;  // the source of delayed writes
  cudaStream_t stream = nullptr;
  cudaEvent_t written = nullptr;
  bool pending = false;  // a delayed write was enqueued on `stream`

  ~Storage() {
    if (host_memory) {
      std::free(base);
      return;
    }
    if (stream) cudaStreamSynchronize(stream);
    device_free(base);
    pinned_free(pinned);
    if (written) cudaEventDestroy(written);
    if (stream) cudaStreamDestroy(stream);
    cudaGetLastError();
  }
};

uint8_t dlpack_code(char kind) {
  switch (kind) {
    case 'f': return dlpack::kFloat;
    case 'i': return dlpack::kInt;
    case 'u': return dlpack::kUInt;
    case 'c': return dlpack::kComplex;
    case 'b': return dlpack::kBool;
  }
  throw py::type_error("DeviceArray: unsupported dtype kind '" + std::string(1, kind) + "'");
}

struct Context {
  std::shared_ptr<Storage> storage;
  std::shared_ptr<Counters> counters;
  std::vector<int64_t> shape, strides;
  dlpack::ManagedTensor managed{};
};

void release_context(dlpack::ManagedTensor* self) {
  auto* ctx = static_cast<Context*>(self->manager_ctx);
  ++ctx->counters->releases;
  delete ctx;
}

}  // namespace

struct DeviceArray::State {
  std::shared_ptr<Storage> storage;
  std::shared_ptr<Counters> counters = std::make_shared<Counters>();
  int label_device = 0;
  bool handshake = true;
  bool offset_in_pointer = false;
  int64_t pad = 0;
  int64_t first = 0;  // bytes from the start of the extent to element [0, 0]
  uint8_t code = dlpack::kFloat;
  uint8_t bits = 32;
  std::vector<int64_t> shape, strides;  // strides in elements; empty: C-contiguous
  py::dtype dtype;
  std::vector<py::ssize_t> byte_strides;
  py::list requested_streams;
};

DeviceArray::DeviceArray(const py::array& host, int device, bool host_memory, int64_t pad_bytes,
                         bool offset_in_pointer, bool stream_handshake, int dlpack_device)
    : state_(std::make_shared<State>()) {
  State& s = *state_;
  if (pad_bytes < 0) throw py::value_error("DeviceArray: pad_bytes must be >= 0");
  const auto item = static_cast<int64_t>(host.itemsize());
  const bool bfloat16 = std::string(py::str(host.dtype().attr("name"))) == "bfloat16";  // ml_dtypes
  s.code = bfloat16 ? static_cast<uint8_t>(dlpack::kBfloat) : dlpack_code(host.dtype().kind());
  s.bits = static_cast<uint8_t>(item * 8);
  s.dtype = host.dtype();
  s.label_device = dlpack_device >= 0 ? dlpack_device : device;
  s.handshake = stream_handshake;
  s.offset_in_pointer = offset_in_pointer;
  s.pad = pad_bytes;
  // The memory extent the view touches, in bytes relative to element [0, 0].
  int64_t lo = 0, hi = item;
  bool empty = false;
  for (py::ssize_t d = 0; d < host.ndim(); ++d) {
    const int64_t n = host.shape(d), stride = host.strides(d);
    if (stride % item != 0) throw py::value_error("DeviceArray: strides must be multiples of the item size");
    s.shape.push_back(n);
    s.strides.push_back(stride / item);
    s.byte_strides.push_back(stride);
    if (n == 0) empty = true;
    else if (stride < 0) lo += (n - 1) * stride;
    else hi += (n - 1) * stride;
  }
  if (host.flags() & py::array::c_style) s.strides.clear();  // DLPack's "null strides": compact row-major
  const size_t extent = empty ? 0 : static_cast<size_t>(hi - lo);
  s.first = -lo;

  auto storage = std::make_shared<Storage>();
  storage->device = device;
  storage->host_memory = host_memory;
  storage->bytes = static_cast<size_t>(pad_bytes) + extent;
  const char* src = static_cast<const char*>(host.data()) + lo;
  if (host_memory) {
    storage->base = static_cast<char*>(std::aligned_alloc(256, (storage->bytes + 256) / 256 * 256));
    if (extent) std::memcpy(storage->base + pad_bytes, src, extent);
  } else {
    DeviceGuard guard(device);
    storage->base = static_cast<char*>(device_alloc(storage->bytes ? storage->bytes : 1, "a DeviceArray"));
    if (extent)
      check(cudaMemcpy(storage->base + pad_bytes, src, extent, cudaMemcpyHostToDevice), "DeviceArray upload");
  }
  s.storage = std::move(storage);
}

py::tuple DeviceArray::dlpack_device() const {
  return py::make_tuple(static_cast<int>(dlpack::kCUDA), state_->label_device);
}

py::capsule DeviceArray::dlpack(const py::object& stream) {
  State& s = *state_;
  s.requested_streams.append(stream);
  if (!stream.is_none() && !s.handshake)
    throw std::runtime_error("DeviceArray: this producer does not support DLPack export with a non-None stream");
  if (s.storage->pending && s.handshake && !stream.is_none()) {
    const long long value = stream.cast<long long>();
    if (value == 0) throw py::value_error("DeviceArray: stream 0 is ambiguous in DLPack; pass 1 or 2");
    if (value != -1) {
      DeviceGuard guard(s.storage->device);
      cudaStream_t consumer = value == 1   ? cudaStreamLegacy
                              : value == 2 ? cudaStreamPerThread
                                           : reinterpret_cast<cudaStream_t>(static_cast<uintptr_t>(value));
      check(cudaEventRecord(s.storage->written, s.storage->stream), "DeviceArray handshake");
      check(cudaStreamWaitEvent(consumer, s.storage->written, 0), "DeviceArray handshake");
    }
  }
  // stream=None: this test producer does what tf.Tensor does, no synchronisation at all.
  auto* ctx = new Context{s.storage, s.counters, s.shape, s.strides, {}};
  dlpack::Tensor& t = ctx->managed.dl_tensor;
  const uint64_t offset = static_cast<uint64_t>(s.pad + s.first);
  t.data = s.offset_in_pointer ? s.storage->base + offset : s.storage->base;
  t.byte_offset = s.offset_in_pointer ? 0 : offset;
  t.device = {dlpack::kCUDA, s.label_device};
  t.ndim = static_cast<int32_t>(ctx->shape.size());
  t.dtype = {s.code, s.bits, 1};
  t.shape = ctx->shape.data();
  t.strides = ctx->strides.empty() ? nullptr : ctx->strides.data();
  ctx->managed.manager_ctx = ctx;
  ctx->managed.deleter = &release_context;
  ++s.counters->exports;
  return py::capsule(&ctx->managed, "dltensor", [](PyObject* capsule) {
    // Only a capsule nobody consumed still owns its tensor.
    if (PyCapsule_IsValid(capsule, "dltensor")) {
      auto* m = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
      if (m && m->deleter) m->deleter(m);
    }
  });
}

void DeviceArray::overwrite_later(const py::array& values, double delay_ms) {
  State& s = *state_;
  Storage& st = *s.storage;
  if (st.host_memory) throw py::value_error("DeviceArray: overwrite_later needs device memory");
  if (!values.dtype().equal(s.dtype) || values.ndim() != static_cast<py::ssize_t>(s.shape.size()))
    throw py::value_error("DeviceArray: overwrite_later needs the same dtype and shape");
  for (size_t d = 0; d < s.shape.size(); ++d)
    if (values.shape(d) != s.shape[d]) throw py::value_error("DeviceArray: overwrite_later needs the same shape");
  DeviceGuard guard(st.device);
  if (!st.stream) {
    check(cudaStreamCreateWithFlags(&st.stream, cudaStreamNonBlocking), "DeviceArray stream");
    check(cudaEventCreateWithFlags(&st.written, cudaEventDisableTiming), "DeviceArray event");
  }
  check(cudaStreamSynchronize(st.stream), "DeviceArray stream");
  if (!st.pinned) st.pinned = static_cast<char*>(pinned_alloc(st.bytes ? st.bytes : 1, "a DeviceArray write"));
  if (st.bytes) check(cudaMemcpy(st.pinned, st.base, st.bytes, cudaMemcpyDeviceToHost), "DeviceArray download");
  // Write the values into the pinned copy through this array's own layout.
  const py::capsule borrowed(static_cast<void*>(st.pinned), [](void*) {});  // st.pinned outlives `layout`
  py::array layout(s.dtype, s.shape, s.byte_strides, st.pinned + s.pad + s.first, borrowed);
  layout.attr("__setitem__")(py::ellipsis(), values);
  kernels::spin(static_cast<int64_t>(delay_ms * 1e6), st.stream);
  check(cudaMemcpyAsync(st.base, st.pinned, st.bytes, cudaMemcpyHostToDevice, st.stream), "DeviceArray write");
  st.pending = true;
}

long DeviceArray::exports() const { return state_->counters->exports.load(); }
long DeviceArray::releases() const { return state_->counters->releases.load(); }
py::list DeviceArray::requested_streams() const { return state_->requested_streams; }

}  // namespace ncap::cuda
