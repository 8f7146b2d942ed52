// pybind11 bindings for ncap._core: convert and check arrays, release the GIL,
// call the core. No maths here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "ncap/core.hpp"
#include "ncap/parallel.hpp"
#include "pyresult.hpp"

namespace py = pybind11;

namespace {

// Keeps the arrays alive while the core reads them without the GIL.
struct HeldTrace {
  std::vector<py::array> owners;
  ncap::Trace trace;
};

ncap::MatrixView view_of(const py::handle& obj, const std::string& name, std::vector<py::array>& owners) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(name + ": expected a numpy.ndarray, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  auto arr = py::reinterpret_borrow<py::array>(obj);
  ncap::MatrixView v;
  if (arr.dtype().equal(py::dtype::of<float>())) {
    v.dtype = ncap::DType::Float32;
  } else if (arr.dtype().equal(py::dtype::of<double>())) {
    v.dtype = ncap::DType::Float64;
  } else {
    throw py::type_error(name + ": expected float32 or float64, got dtype " +
                         std::string(py::str(arr.dtype())));
  }
  if (arr.ndim() != 2)
    throw py::value_error(name + ": expected a 2-D array of shape (batch, width), got " +
                          std::to_string(arr.ndim()) + "-D");
  const auto item = static_cast<py::ssize_t>(arr.itemsize());
  const auto ptr = reinterpret_cast<std::uintptr_t>(arr.data());
  if (arr.strides(0) % item != 0 || arr.strides(1) % item != 0 || ptr % item != 0)
    throw py::value_error(name + ": unaligned memory; pass numpy.ascontiguousarray(x)");
  v.data = arr.data();
  v.rows = arr.shape(0);
  v.cols = arr.shape(1);
  v.row_stride = arr.strides(0) / item;
  v.col_stride = arr.strides(1) / item;
  owners.push_back(arr);
  return v;
}

std::vector<ncap::MatrixView> views_of(const py::sequence& seq, const char* name, std::vector<py::array>& owners) {
  std::vector<ncap::MatrixView> out;
  out.reserve(py::len(seq));
  for (size_t i = 0; i < py::len(seq); ++i)
    out.push_back(view_of(seq[i], std::string(name) + "[" + std::to_string(i) + "]", owners));
  return out;
}

HeldTrace hold(const py::sequence& acts, const py::sequence& derivs, const py::sequence& grads) {
  HeldTrace h;
  h.trace.acts = views_of(acts, "acts", h.owners);
  h.trace.derivs = views_of(derivs, "derivs", h.owners);
  h.trace.grads = views_of(grads, "grads", h.owners);
  return h;
}

py::dict beff(const py::sequence& acts, const py::sequence& derivs, const py::sequence& grads,
              bool per_sample, int threads) {
  HeldTrace h = hold(acts, derivs, grads);
  ncap::BetaTerms r;
  {
    py::gil_scoped_release release;
    r = ncap::beta_eff(h.trace, per_sample ? ncap::Reduction::Sample : ncap::Reduction::Batch, threads);
  }
  return result_dict(r, per_sample);
}

py::list degrees(const py::sequence& acts, const py::sequence& derivs, const py::sequence& grads, int threads) {
  HeldTrace h = hold(acts, derivs, grads);
  DegreeOutputs out(ncap::check_trace(h.trace, ncap::kMinDegreeLayers));  // shapes checked before allocating
  {
    py::gil_scoped_release release;
    ncap::degrees(h.trace, out.in_ptrs, out.out_ptrs, threads);
  }
  return out.as_list();
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "ncap's compiled CPU core (private; use ncap.beff / ncap.degrees)";
  register_ncap_exceptions();
  export_spec_constants(m);
  m.def("beff", &beff, py::arg("acts"), py::arg("derivs"), py::arg("grads"), py::arg("per_sample"),
        py::arg("threads") = 0, "Closed-form beta_eff terms (SPEC section 3) as a dict.");
  m.def("degrees", &degrees, py::arg("acts"), py::arg("derivs"), py::arg("grads"), py::arg("threads") = 0,
        "Per-layer (delta_in, delta_out) in Keras layout (SPEC section 2).");
  m.def("available_threads", &ncap::available_threads, "Threads the kernel uses when threads=0.");
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
}
