// pybind11 bindings for ncap._core: convert and check arrays, release the GIL,
// call the core. No maths here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "ncap/core.hpp"
#include "ncap/parallel.hpp"

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
  if (arr.dtype().is(py::dtype::of<float>())) {
    v.dtype = ncap::DType::Float32;
  } else if (arr.dtype().is(py::dtype::of<double>())) {
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

py::array_t<double> as_numpy(const std::vector<double>& v, py::ssize_t rows, py::ssize_t cols) {
  py::array_t<double> out({rows, cols});
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

py::dict beff(const py::sequence& acts, const py::sequence& derivs, const py::sequence& grads,
              bool per_sample, int threads) {
  HeldTrace h = hold(acts, derivs, grads);
  ncap::BetaTerms r;
  {
    py::gil_scoped_release release;
    r = ncap::beta_eff(h.trace, per_sample ? ncap::Reduction::Sample : ncap::Reduction::Batch, threads);
  }
  py::dict d;
  const auto L = static_cast<py::ssize_t>(r.widths.size() - 1);
  d["batch_size"] = r.batch;
  d["widths"] = r.widths;
  if (per_sample) {
    const auto B = static_cast<py::ssize_t>(r.batch);
    d["value"] = py::array_t<double>(B, r.value.data());
    d["numerator"] = py::array_t<double>(B, r.numerator.data());
    d["denominator"] = py::array_t<double>(B, r.denominator.data());
    d["scale"] = py::array_t<double>(B, r.scale.data());
    d["degenerate"] = py::array_t<bool>(B, reinterpret_cast<const bool*>(r.degenerate.data()));
    d["layer_numerator"] = as_numpy(r.layer_numerator, L, B);
    d["layer_denominator"] = as_numpy(r.layer_denominator, L, B);
  } else {
    d["value"] = r.value[0];
    d["numerator"] = r.numerator[0];
    d["denominator"] = r.denominator[0];
    d["scale"] = r.scale[0];
    d["degenerate"] = static_cast<bool>(r.degenerate[0]);
    d["layer_numerator"] = r.layer_numerator;
    d["layer_denominator"] = r.layer_denominator;
  }
  return d;
}

py::list degrees(const py::sequence& acts, const py::sequence& derivs, const py::sequence& grads, int threads) {
  HeldTrace h = hold(acts, derivs, grads);
  const std::vector<int64_t> widths = ncap::check_trace(h.trace, 2);  // before allocating outputs
  std::vector<py::array_t<double>> ins, outs;
  std::vector<double*> in_ptrs, out_ptrs;
  for (size_t l = 1; l < widths.size(); ++l) {
    ins.emplace_back(std::vector<py::ssize_t>{widths[l - 1], widths[l]});
    outs.emplace_back(std::vector<py::ssize_t>{widths[l - 1], widths[l]});
    in_ptrs.push_back(ins.back().mutable_data());
    out_ptrs.push_back(outs.back().mutable_data());
  }
  {
    py::gil_scoped_release release;
    ncap::degrees(h.trace, in_ptrs, out_ptrs, threads);
  }
  py::list result;
  for (size_t k = 0; k < ins.size(); ++k) result.append(py::make_tuple(ins[k], outs[k]));
  return result;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "ncap's compiled CPU core (private; use ncap.beff / ncap.degrees)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ncap::ArgumentError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const ncap::WorkspaceError& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });
  m.def("beff", &beff, py::arg("acts"), py::arg("derivs"), py::arg("grads"), py::arg("per_sample"),
        py::arg("threads") = 0, "Closed-form beta_eff terms (SPEC section 3) as a dict.");
  m.def("degrees", &degrees, py::arg("acts"), py::arg("derivs"), py::arg("grads"), py::arg("threads") = 0,
        "Per-layer (delta_in, delta_out) in Keras layout (SPEC section 2).");
  m.def("available_threads", &ncap::available_threads, "Threads the kernel uses when threads=0.");
  m.def("workspace_bytes", &ncap::workspace_bytes, py::arg("widths"), py::arg("batch"));
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
}
