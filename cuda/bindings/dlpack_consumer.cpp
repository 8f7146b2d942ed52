#include "dlpack_consumer.hpp"

#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "../src/runtime.hpp"
#include "ncap/beff_cuda.hpp"

namespace ncap::cuda {
namespace {

bool is_cuda_device_type(int32_t type) { return type == dlpack::kCUDA || type == dlpack::kCUDAManaged; }

std::string type_name(const py::handle& obj) { return py::str(py::type::of(obj).attr("__name__")); }

struct Producer {
  py::object object;
  std::string name;
};

void collect(const py::sequence& seq, const char* name, std::vector<Producer>& out) {
  for (size_t i = 0; i < py::len(seq); ++i)
    out.push_back({seq[i], std::string(name) + "[" + std::to_string(i) + "]"});
}

// (device type, device id) from __dlpack_device__, checked to be a CUDA device.
int cuda_device_of(const Producer& p) {
  if (!py::hasattr(p.object, "__dlpack__") || !py::hasattr(p.object, "__dlpack_device__"))
    throw py::type_error(p.name + ": expected a CUDA tensor with __dlpack__ and __dlpack_device__, got " +
                         type_name(p.object));
  const py::tuple where = p.object.attr("__dlpack_device__")();
  const int type = where[0].cast<int>(), id = where[1].cast<int>();
  if (!is_cuda_device_type(type))
    throw py::value_error(p.name + ": not on a CUDA device (DLPack device type " + std::to_string(type) +
                          "); host arrays go to ncap._core");
  return id;
}

// The capsule, ordered on `stream` when the producer takes DLPack's stream
// argument; `refused` is set when it does not (tf.Tensor raises on any stream).
py::object capsule_on(const Producer& p, cudaStream_t stream, bool& refused) {
  const auto handle = static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(stream));
  try {
    return p.object.attr("__dlpack__")(py::arg("stream") = handle);
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError) && !e.matches(PyExc_RuntimeError) && !e.matches(PyExc_BufferError) &&
        !e.matches(PyExc_NotImplementedError))
      throw;
  }
  refused = true;
  return p.object.attr("__dlpack__")();
}

std::string dtype_text(const dlpack::DataType& d) {
  switch (d.code) {
    case dlpack::kInt: return "int" + std::to_string(d.bits);
    case dlpack::kUInt: return "uint" + std::to_string(d.bits);
    case dlpack::kFloat: return "float" + std::to_string(d.bits);
    case dlpack::kBfloat: return "bfloat" + std::to_string(d.bits);
    case dlpack::kComplex: return "complex" + std::to_string(d.bits);
    case dlpack::kBool: return "bool";
  }
  return "DLPack type code " + std::to_string(d.code);
}

}  // namespace

BorrowedTensor::BorrowedTensor(py::object capsule, std::string name) : name_(std::move(name)) {
  PyObject* raw = capsule.ptr();
  if (!PyCapsule_IsValid(raw, "dltensor"))
    throw py::type_error(name_ + ": __dlpack__ did not return an unused DLPack capsule (\"dltensor\")");
  managed_ = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(raw, "dltensor"));
  PyCapsule_SetName(raw, "used_dltensor");  // ours now: the capsule no longer calls the deleter
}

BorrowedTensor::BorrowedTensor(BorrowedTensor&& other) noexcept
    : name_(std::move(other.name_)), managed_(other.managed_) {
  other.managed_ = nullptr;
}

BorrowedTensor::~BorrowedTensor() {
  if (managed_ && managed_->deleter) managed_->deleter(managed_);
}

MatrixView BorrowedTensor::view(int device) const {
  const dlpack::Tensor& t = managed_->dl_tensor;
  if (!is_cuda_device_type(t.device.device_type))
    throw py::value_error(name_ + ": not on a CUDA device (DLPack device type " +
                          std::to_string(t.device.device_type) + "); host arrays go to ncap._core");
  if (t.device.device_id != device)
    throw py::value_error(name_ + ": on CUDA device " + std::to_string(t.device.device_id) +
                          ", but the other arrays are on device " + std::to_string(device));
  MatrixView v;
  if (t.dtype.code == dlpack::kFloat && t.dtype.lanes == 1 && t.dtype.bits == 16) v.dtype = DType::Float16;
  else if (t.dtype.code == dlpack::kBfloat && t.dtype.lanes == 1 && t.dtype.bits == 16) v.dtype = DType::BFloat16;
  else if (t.dtype.code == dlpack::kFloat && t.dtype.lanes == 1 && t.dtype.bits == 32) v.dtype = DType::Float32;
  else if (t.dtype.code == dlpack::kFloat && t.dtype.lanes == 1 && t.dtype.bits == 64) v.dtype = DType::Float64;
  else
    throw py::type_error(name_ + ": expected float16, bfloat16, float32 or float64, got " + dtype_text(t.dtype) +
                         "; activations, derivatives and gradients are real numbers, cast them explicitly");
  if (t.ndim != 2)
    throw py::value_error(name_ + ": expected a 2-D tensor of shape (batch, width), got " + std::to_string(t.ndim) +
                          "-D");
  const size_t item = t.dtype.bits / 8;
  const auto* data = static_cast<const char*>(t.data) + t.byte_offset;
  v.data = data;
  v.rows = t.shape[0];
  v.cols = t.shape[1];
  v.row_stride = t.strides ? t.strides[0] : t.shape[1];
  v.col_stride = t.strides ? t.strides[1] : 1;
  if (v.rows <= 0 || v.cols <= 0) return v;  // check_trace names the empty shape

  if (reinterpret_cast<uintptr_t>(data) % item != 0)
    throw py::value_error(name_ + ": its data (pointer + byte_offset) is not aligned to its " + std::to_string(item) +
                          "-byte elements; pass a contiguous copy (e.g. tensor.contiguous() or tensor.clone())");
  cudaPointerAttributes attributes{};
  const cudaError_t err = cudaPointerGetAttributes(&attributes, data);
  if (err != cudaSuccess) {
    check(err == cudaErrorInvalidValue ? cudaSuccess : err, "cudaPointerGetAttributes");  // no device: throws
    cudaGetLastError();
    throw py::value_error(name_ + ": says it lives on CUDA device " + std::to_string(device) +
                          ", but its data pointer is not CUDA memory");
  }
  if (attributes.type == cudaMemoryTypeManaged) return v;
  if (attributes.type != cudaMemoryTypeDevice)
    throw py::value_error(name_ + ": says it lives on CUDA device " + std::to_string(device) +
                          ", but its data pointer is host memory");
  if (attributes.device != device)
    throw py::value_error(
        name_ + ": DLPack names CUDA device " + std::to_string(device) + ", but its memory is on CUDA device " +
        std::to_string(attributes.device) +
        ". TensorFlow numbers GPUs by its own logical index, which differs from the CUDA ordinal when "
        "tf.config.set_visible_devices hides some GPUs; make them agree with CUDA_VISIBLE_DEVICES instead");
  return v;
}

HeldTrace hold(const py::sequence& acts, const py::sequence& derivs, const py::sequence& grads) {
  std::vector<Producer> producers;
  collect(acts, "acts", producers);
  collect(derivs, "derivs", producers);
  collect(grads, "grads", producers);
  HeldTrace h;
  if (producers.empty()) return h;  // check_trace names the empty list
  for (const Producer& p : producers) {
    const int id = cuda_device_of(p);
    if (h.device < 0) h.device = id;
    if (id != h.device)
      throw py::value_error(p.name + ": on CUDA device " + std::to_string(id) + ", but " + producers[0].name +
                            " is on device " + std::to_string(h.device) + "; put all arrays on one GPU");
  }
  const int count = require_devices();
  if (h.device >= count)
    throw py::value_error(producers[0].name + ": on CUDA device " + std::to_string(h.device) + ", but only " +
                          std::to_string(count) + " CUDA device(s) are visible");
  const cudaStream_t stream = stream_for(h.device);
  h.owners.reserve(producers.size());
  for (const Producer& p : producers) h.owners.emplace_back(capsule_on(p, stream, h.unordered_producer), p.name);
  const size_t n_acts = py::len(acts), n_derivs = py::len(derivs);
  for (size_t k = 0; k < h.owners.size(); ++k) {
    const MatrixView v = h.owners[k].view(h.device);
    if (k < n_acts) h.trace.acts.push_back(v);
    else if (k < n_acts + n_derivs) h.trace.derivs.push_back(v);
    else h.trace.grads.push_back(v);
  }
  return h;
}

}  // namespace ncap::cuda
