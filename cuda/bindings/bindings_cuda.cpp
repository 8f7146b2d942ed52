// pybind11 bindings for ncap._core_cuda: take DLPack tensors that live on a
// CUDA device (no copy), check them, release the GIL, call the CUDA core.
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <string>
#include <vector>

#include "ncap/beff_cuda.hpp"
#include "dlpack_min.h"
#include "pyresult.hpp"

namespace {

// Takes a tensor's DLPack capsule; hands the tensor back to its producer when destroyed.
class BorrowedTensor {
 public:
  BorrowedTensor(const py::handle& obj, const std::string& name) : name_(name) {
    if (!py::hasattr(obj, "__dlpack__"))
      throw py::type_error(name + ": expected a CUDA tensor with __dlpack__, got " +
                           std::string(py::str(py::type::of(obj).attr("__name__"))));
    py::object capsule;
    try {
      capsule = obj.attr("__dlpack__")(py::arg("stream") = 1);  // producer syncs with the legacy default stream
    } catch (py::error_already_set&) {
      capsule = obj.attr("__dlpack__")();
    }
    auto* raw = capsule.ptr();
    if (!PyCapsule_IsValid(raw, "dltensor")) throw py::type_error(name + ": __dlpack__ did not return a DLPack capsule");
    managed_ = static_cast<ncap::dlpack::ManagedTensor*>(PyCapsule_GetPointer(raw, "dltensor"));
    PyCapsule_SetName(raw, "used_dltensor");  // we own it now and call its deleter
  }
  BorrowedTensor(const BorrowedTensor&) = delete;
  BorrowedTensor& operator=(const BorrowedTensor&) = delete;
  BorrowedTensor(BorrowedTensor&& o) noexcept : name_(std::move(o.name_)), managed_(o.managed_) { o.managed_ = nullptr; }
  ~BorrowedTensor() {
    if (managed_ && managed_->deleter) managed_->deleter(managed_);
  }

  ncap::MatrixView view(int& device) const {
    const auto& t = managed_->dl_tensor;
    if (t.device.device_type != ncap::dlpack::kCUDA && t.device.device_type != ncap::dlpack::kCUDAManaged)
      throw py::value_error(name_ + ": not on a CUDA device (DLPack device type " +
                            std::to_string(t.device.device_type) + "); host arrays go to ncap._core");
    if (device < 0) device = t.device.device_id;
    if (t.device.device_id != device)
      throw py::value_error(name_ + ": on CUDA device " + std::to_string(t.device.device_id) +
                            ", but the other arrays are on device " + std::to_string(device));
    if (t.dtype.code != ncap::dlpack::kFloat || t.dtype.lanes != 1 || (t.dtype.bits != 32 && t.dtype.bits != 64))
      throw py::type_error(name_ + ": expected float32 or float64 (DLPack code " + std::to_string(t.dtype.code) +
                           ", bits " + std::to_string(t.dtype.bits) + ")");
    if (t.ndim != 2)
      throw py::value_error(name_ + ": expected a 2-D tensor of shape (batch, width), got " + std::to_string(t.ndim) + "-D");
    ncap::MatrixView v;
    v.dtype = t.dtype.bits == 32 ? ncap::DType::Float32 : ncap::DType::Float64;
    v.data = static_cast<const char*>(t.data) + t.byte_offset;
    v.rows = t.shape[0];
    v.cols = t.shape[1];
    v.row_stride = t.strides ? t.strides[0] : t.shape[1];
    v.col_stride = t.strides ? t.strides[1] : 1;
    return v;
  }

 private:
  std::string name_;
  ncap::dlpack::ManagedTensor* managed_ = nullptr;
};

struct HeldTrace {
  std::vector<BorrowedTensor> owners;
  ncap::Trace trace;
  int device = -1;
};

void add(const py::sequence& seq, const char* name, HeldTrace& h, std::vector<ncap::MatrixView>& views) {
  for (size_t i = 0; i < py::len(seq); ++i) {
    h.owners.emplace_back(seq[i], std::string(name) + "[" + std::to_string(i) + "]");
    views.push_back(h.owners.back().view(h.device));
  }
}

HeldTrace hold(const py::sequence& acts, const py::sequence& derivs, const py::sequence& grads) {
  HeldTrace h;
  h.owners.reserve(py::len(acts) + py::len(derivs) + py::len(grads));
  add(acts, "acts", h, h.trace.acts);
  add(derivs, "derivs", h, h.trace.derivs);
  add(grads, "grads", h, h.trace.grads);
  return h;
}

py::dict beff(const py::sequence& acts, const py::sequence& derivs, const py::sequence& grads, bool per_sample,
              int /*threads*/) {
  HeldTrace h = hold(acts, derivs, grads);
  ncap::BetaTerms r;
  {
    py::gil_scoped_release release;
    r = ncap::cuda::beta_eff(h.trace, per_sample ? ncap::Reduction::Sample : ncap::Reduction::Batch, h.device);
  }
  return result_dict(r, per_sample);
}

py::list degrees(const py::sequence& acts, const py::sequence& derivs, const py::sequence& grads, int /*threads*/) {
  HeldTrace h = hold(acts, derivs, grads);
  DegreeOutputs out(ncap::check_trace(h.trace, ncap::kMinDegreeLayers));
  {
    py::gil_scoped_release release;
    ncap::cuda::degrees(h.trace, out.in_ptrs, out.out_ptrs, h.device);
  }
  return out.as_list();
}

// A float array copied to GPU memory that speaks DLPack: lets tests and the
// GPU check feed the CUDA path without PyTorch or CuPy.
class DeviceArray {
 public:
  explicit DeviceArray(const py::array& host, int device) : device_(device) {
    auto arr = py::array::ensure(host, py::array::c_style);
    if (!arr) throw py::type_error("DeviceArray: expected an array");
    if (arr.dtype().equal(py::dtype::of<float>())) bits_ = 32;
    else if (arr.dtype().equal(py::dtype::of<double>())) bits_ = 64;
    else throw py::type_error("DeviceArray: expected float32 or float64");
    for (py::ssize_t d = 0; d < arr.ndim(); ++d) shape_.push_back(arr.shape(d));
    const size_t bytes = static_cast<size_t>(arr.nbytes());
    void* ptr = nullptr;
    if (cudaSetDevice(device) != cudaSuccess || cudaMalloc(&ptr, bytes ? bytes : 1) != cudaSuccess)
      throw std::runtime_error("DeviceArray: could not allocate GPU memory");
    data_ = std::shared_ptr<void>(ptr, [](void* p) { cudaFree(p); });
    if (bytes && cudaMemcpy(ptr, arr.data(), bytes, cudaMemcpyHostToDevice) != cudaSuccess)
      throw std::runtime_error("DeviceArray: copy to the GPU failed");
  }

  py::tuple dlpack_device() const { return py::make_tuple(static_cast<int>(ncap::dlpack::kCUDA), device_); }

  py::capsule dlpack(py::object /*stream*/) const {
    struct Context {
      std::shared_ptr<void> data;
      std::vector<int64_t> shape;
      ncap::dlpack::ManagedTensor managed;
    };
    auto* ctx = new Context{data_, shape_, {}};
    auto& t = ctx->managed.dl_tensor;
    t.data = ctx->data.get();
    t.device = {ncap::dlpack::kCUDA, device_};
    t.ndim = static_cast<int32_t>(ctx->shape.size());
    t.dtype = {ncap::dlpack::kFloat, static_cast<uint8_t>(bits_), 1};
    t.shape = ctx->shape.data();
    t.strides = nullptr;
    t.byte_offset = 0;
    ctx->managed.manager_ctx = ctx;
    ctx->managed.deleter = [](ncap::dlpack::ManagedTensor* self) { delete static_cast<Context*>(self->manager_ctx); };
    return py::capsule(&ctx->managed, "dltensor", [](PyObject* cap) {
      // Only an unconsumed capsule still owns its tensor.
      if (PyCapsule_IsValid(cap, "dltensor")) {
        auto* m = static_cast<ncap::dlpack::ManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
        if (m && m->deleter) m->deleter(m);
      }
    });
  }

  py::array to_numpy() const {
    py::array out(bits_ == 32 ? py::dtype::of<float>() : py::dtype::of<double>(), shape_);
    if (out.nbytes() && cudaMemcpy(out.mutable_data(), data_.get(), out.nbytes(), cudaMemcpyDeviceToHost) != cudaSuccess)
      throw std::runtime_error("DeviceArray: copy to the host failed");
    return out;
  }

 private:
  int device_ = 0;
  int bits_ = 32;
  std::vector<int64_t> shape_;
  std::shared_ptr<void> data_;
};

}  // namespace

PYBIND11_MODULE(_core_cuda, m) {
  m.doc() = "ncap's CUDA core (private; ncap.beff dispatches here for CUDA tensors)";
  register_ncap_exceptions();
  export_spec_constants(m);
  m.def("beff", &beff, py::arg("acts"), py::arg("derivs"), py::arg("grads"), py::arg("per_sample"),
        py::arg("threads") = 0, "Closed-form beta_eff terms for CUDA tensors (results on the host).");
  m.def("degrees", &degrees, py::arg("acts"), py::arg("derivs"), py::arg("grads"), py::arg("threads") = 0,
        "Per-layer (delta_in, delta_out) for CUDA tensors, returned as host NumPy arrays.");
  m.def("device_count", &ncap::cuda::device_count, "Visible CUDA devices (0 when there is no GPU or driver).");
  py::class_<DeviceArray>(m, "DeviceArray", "A host array copied to GPU memory, exported through DLPack.")
      .def(py::init<const py::array&, int>(), py::arg("host"), py::arg("device") = 0)
      .def("__dlpack__", &DeviceArray::dlpack, py::arg("stream") = py::none())
      .def("__dlpack_device__", &DeviceArray::dlpack_device)
      .def("to_numpy", &DeviceArray::to_numpy);
}
