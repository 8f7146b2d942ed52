// pybind11 bindings for ncap._core_cuda: take DLPack tensors that live on a
// CUDA device (no copy), check them, release the GIL, call the CUDA core.
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "../src/runtime.hpp"
#include "device_array.hpp"
#include "dlpack_consumer.hpp"
#include "ncap/beff_cuda.hpp"
#include "pyresult.hpp"

namespace {

using ncap::cuda::HeldTrace;

ncap::cuda::Options options_for(const HeldTrace& h, const std::string& strategy) {
  ncap::cuda::Options o;
  o.synchronize_device_first = h.unordered_producer;
  o.strategy = strategy;
  return o;
}

py::dict beff(const py::sequence& acts, const py::sequence& derivs, const py::sequence& grads, bool per_sample,
              int /*threads*/, const std::string& strategy) {
  HeldTrace h = ncap::cuda::hold(acts, derivs, grads);
  const ncap::cuda::Options options = options_for(h, strategy);
  ncap::BetaTerms r;
  {
    py::gil_scoped_release release;
    r = ncap::cuda::beta_eff(h.trace, per_sample ? ncap::Reduction::Sample : ncap::Reduction::Batch, h.device,
                             options);
  }
  return result_dict(r, per_sample);
}

py::list degrees(const py::sequence& acts, const py::sequence& derivs, const py::sequence& grads, int /*threads*/) {
  HeldTrace h = ncap::cuda::hold(acts, derivs, grads);
  DegreeOutputs out(ncap::check_trace(h.trace, ncap::kMinDegreeLayers));  // shapes checked before allocating
  const ncap::cuda::Options options = options_for(h, "auto");
  {
    py::gil_scoped_release release;
    ncap::cuda::degrees(h.trace, out.in_ptrs, out.out_ptrs, h.device, options);
  }
  return out.as_list();
}

int current_device() {
  int device = 0;
  ncap::cuda::check(cudaGetDevice(&device), "cudaGetDevice");
  return device;
}

void set_current_device(int device) { ncap::cuda::check(cudaSetDevice(device), "cudaSetDevice"); }

py::dict call_counts() {
  const ncap::cuda::CallCounts c = ncap::cuda::call_counts();
  py::dict d;
  d["device_allocations"] = c.device_allocations;
  d["device_to_host_copies"] = c.device_to_host_copies;
  d["device_synchronizations"] = c.device_synchronizations;
  d["stream_synchronizations"] = c.stream_synchronizations;
  return d;
}

}  // namespace

PYBIND11_MODULE(_core_cuda, m) {
  using ncap::cuda::DeviceArray;
  m.doc() = "ncap's CUDA core (private; ncap.beff dispatches here for CUDA tensors)";
  register_ncap_exceptions();
  export_spec_constants(m);
#ifdef NCAP_CUDA_EMULATION
  m.attr("emulated") = true;
#else
  m.attr("emulated") = false;
#endif
  m.def("beff", &beff, py::arg("acts"), py::arg("derivs"), py::arg("grads"), py::arg("per_sample"),
        py::arg("threads") = 0, py::arg("strategy") = "auto",
        "Closed-form beta_eff terms for CUDA tensors (results on the host). strategy: 'auto', or "
        "'gram' / 'rows' to force how the batch numerator is summed (tests).");
  m.def("degrees", &degrees, py::arg("acts"), py::arg("derivs"), py::arg("grads"), py::arg("threads") = 0,
        "Per-layer (delta_in, delta_out) for CUDA tensors, returned as host NumPy arrays.");
  m.def("device_count", &ncap::cuda::device_count, "Visible CUDA devices (0 when there is no GPU or driver).");
  m.def("current_device", &current_device, "The calling thread's current CUDA device.");
  m.def("_set_current_device", &set_current_device, py::arg("device"),
        "Testing: cudaSetDevice for the calling thread.");
  m.def("workspace_bytes", &ncap::cuda::workspace_bytes, py::arg("widths"), py::arg("batch"),
        py::arg("work") = "batch", py::arg("strategy") = "auto",
        "Device memory one call needs (work: 'batch', 'sample' or 'degrees'); calls that need more than the "
        "device has free are refused up front with MemoryError.");
  m.def("numerator_strategies", &ncap::cuda::numerator_strategies, py::arg("widths"), py::arg("batch"),
        "Per weight layer l = 2..L-1: 'gram' (B x B products) or 'rows' (degree rows), by operation count.");
  m.def("cached_workspace_bytes", &ncap::cuda::cached_workspace_bytes, py::arg("device") = 0,
        "Device memory ncap keeps between calls on `device`.");
  m.def("release_workspaces", &ncap::cuda::release_workspaces, "Free the device memory ncap keeps between calls.");
  m.def("_fail_next_allocations", &ncap::cuda::fail_next_allocations, py::arg("count"),
        "Testing: the next `count` device allocations ask for an impossible size, so the CUDA runtime fails them "
        "(the cached workspace should be released first).");
  m.def("_call_counts", &call_counts, "Testing: counts of allocations, copies and synchronisations so far.");
  m.def("_last_error", [] { return static_cast<int>(cudaPeekAtLastError()); },
        "Testing: the CUDA runtime's last-error state (0: clear), without clearing it.");
  py::class_<DeviceArray>(m, "DeviceArray",
                          "A host array copied to GPU memory, exported through DLPack (a test producer).")
      .def(py::init<const py::array&, int, bool, int64_t, bool, bool, int>(), py::arg("host"),
           py::arg("device") = 0, py::kw_only(), py::arg("host_memory") = false, py::arg("pad_bytes") = 0,
           py::arg("offset_in_pointer") = false, py::arg("stream_handshake") = true, py::arg("dlpack_device") = -1)
      .def(
          "__dlpack__",
          [](DeviceArray& self, const py::object& stream, const py::object&, const py::object&,
             const py::object&) { return self.dlpack(stream); },
          py::kw_only(), py::arg("stream") = py::none(), py::arg("max_version") = py::none(),
          py::arg("dl_device") = py::none(), py::arg("copy") = py::none(),
          "A legacy DLPack capsule (max_version, dl_device and copy are ignored).")
      .def("__dlpack_device__", &DeviceArray::dlpack_device)
      .def("overwrite_later", &DeviceArray::overwrite_later, py::arg("values"), py::arg("delay_ms"))
      .def_property_readonly("exports", &DeviceArray::exports)
      .def_property_readonly("releases", &DeviceArray::releases)
      .def_property_readonly("requested_streams", &DeviceArray::requested_streams);
}
