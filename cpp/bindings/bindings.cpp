// pybind11 bindings for ncap._core: convert and check arrays, release the GIL,
// call the core. No maths here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "ncap/core.hpp"
#include "ncap/kernels.hpp"
#include "ncap/parallel.hpp"
#include "ncap/peak.hpp"
#include "pyresult.hpp"

namespace py = pybind11;

namespace {

// Keeps the arrays alive while the core reads them without the GIL.
struct HeldTrace {
  std::vector<py::array> owners;
  ncap::Trace trace;
};

bool native_order(char byteorder) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  constexpr char kNative = '>';
#else
  constexpr char kNative = '<';
#endif
  return byteorder == '=' || byteorder == '|' || byteorder == kNative;
}

// "acts[2]": built only for a message.
std::string name_of(const char* list, size_t i) { return std::string(list) + "[" + std::to_string(i) + "]"; }

ncap::MatrixView view_of(const py::handle& obj, const char* list, size_t i, std::vector<py::array>& owners) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(name_of(list, i) + ": expected a numpy.ndarray, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  auto arr = py::reinterpret_borrow<py::array>(obj);
  ncap::MatrixView v;
  const py::dtype dtype = arr.dtype();
  if (dtype.num() == py::detail::npy_api::NPY_FLOAT_ && native_order(dtype.byteorder())) {
    v.dtype = ncap::DType::Float32;
  } else if (dtype.num() == py::detail::npy_api::NPY_DOUBLE_ && native_order(dtype.byteorder())) {
    v.dtype = ncap::DType::Float64;
  } else {
    throw py::type_error(name_of(list, i) + ": expected float32 or float64, got dtype " +
                         std::string(py::str(dtype)));
  }
  if (arr.ndim() != 2)
    throw py::value_error(name_of(list, i) + ": expected a 2-D array of shape (batch, width), got " +
                          std::to_string(arr.ndim()) + "-D");
  const auto item = static_cast<py::ssize_t>(arr.itemsize());
  const auto ptr = reinterpret_cast<std::uintptr_t>(arr.data());
  if (arr.strides(0) % item != 0 || arr.strides(1) % item != 0 || ptr % item != 0)
    throw py::value_error(name_of(list, i) + ": unaligned memory; pass numpy.ascontiguousarray(x)");
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
    out.push_back(view_of(seq[i], name, i, owners));
  return out;
}

HeldTrace hold(const py::sequence& acts, const py::sequence& derivs, const py::sequence& grads) {
  HeldTrace h;
  h.trace.acts = views_of(acts, "acts", h.owners);
  h.trace.derivs = views_of(derivs, "derivs", h.owners);
  h.trace.grads = views_of(grads, "grads", h.owners);
  return h;
}

// `threads` as the core takes it: any Python int is accepted here and checked,
// so that no value (2**40, -5, a bool) reaches the core out of range.
int thread_count(const py::handle& obj) {
  if (!PyLong_Check(obj.ptr()) || PyBool_Check(obj.ptr()))
    throw py::type_error("threads: expected an integer (0 = all cores), got " + std::string(py::repr(obj)));
  int overflow = 0;
  const long long value = PyLong_AsLongLongAndOverflow(obj.ptr(), &overflow);
  if (overflow != 0 || value < 0 || value > ncap::kMaxThreads)
    throw py::value_error("threads: expected 0 (all cores) .. " + std::to_string(ncap::kMaxThreads) + ", got " +
                          std::string(py::repr(obj)));
  return static_cast<int>(value);
}

ncap::Strategy strategy_of(const std::string& name) {
  if (name == "auto") return ncap::Strategy::Auto;
  if (name == "gram") return ncap::Strategy::Gram;
  if (name == "rows") return ncap::Strategy::Rows;
  throw py::value_error("strategy: expected 'auto', 'gram' or 'rows', got '" + name + "'");
}

py::dict beff(const py::sequence& acts, const py::sequence& derivs, const py::sequence& grads, bool per_sample,
              const py::handle& threads_arg, const std::string& strategy_name) {
  const int threads = thread_count(threads_arg);
  const ncap::Strategy strategy = strategy_of(strategy_name);
  HeldTrace h = hold(acts, derivs, grads);
  ncap::BetaTerms r;
  {
    py::gil_scoped_release release;
    r = ncap::beta_eff(h.trace, per_sample ? ncap::Reduction::Sample : ncap::Reduction::Batch, threads, strategy);
  }
  return result_dict(r, per_sample);
}

py::list degrees(const py::sequence& acts, const py::sequence& derivs, const py::sequence& grads,
                 const py::handle& threads_arg) {
  const int threads = thread_count(threads_arg);
  HeldTrace h = hold(acts, derivs, grads);
  ncap::check_memory(h.trace, true);  // the outputs count too: refuse before allocating them
  DegreeOutputs out(ncap::check_trace(h.trace, ncap::kMinDegreeLayers));
  {
    py::gil_scoped_release release;
    ncap::degrees(h.trace, out.in_ptrs, out.out_ptrs, threads);
  }
  return out.as_list();
}

// The strategy the core plans for each numerator layer l = 2..L-1 (for tests and benchmarks).
std::vector<std::string> numerator_strategies(const std::vector<int64_t>& widths, int64_t batch) {
  if (widths.size() < 2 || batch <= 0) throw py::value_error("widths: expected n_0..n_L and batch > 0");
  std::vector<std::string> names;
  for (size_t l = 2; l + 1 < widths.size(); ++l)
    names.emplace_back(ncap::gram_products_are_cheaper(batch, widths[l], widths[l - 1]) ? "gram" : "rows");
  return names;
}

ncap::kernels::Isa isa_of(const std::string& name) {
  for (ncap::kernels::Isa isa : {ncap::kernels::Isa::Generic, ncap::kernels::Isa::Avx2, ncap::kernels::Isa::Avx512})
    if (name == ncap::kernels::isa_name(isa)) return isa;
  throw py::value_error("isa: expected 'generic', 'avx2' or 'avx512', got '" + name + "'");
}

std::vector<std::string> supported_isas() {
  ncap::kernels::Isa found[3];
  const int n = ncap::kernels::supported_isas(found, 3);
  std::vector<std::string> names;
  for (int k = 0; k < n; ++k) names.emplace_back(ncap::kernels::isa_name(found[k]));
  return names;
}

py::dict fma_peak(const py::handle& threads_arg, double seconds, const std::string& isa, int repeats) {
  const int threads = thread_count(threads_arg);
  if (!(seconds > 0 && seconds <= 60)) throw py::value_error("seconds: expected 0 < seconds <= 60");
  const ncap::kernels::Isa chosen = isa.empty() ? ncap::kernels::table().isa : isa_of(isa);
  ncap::PeakRate rate;
  {
    py::gil_scoped_release release;
    rate = ncap::fma_peak(threads, seconds, chosen, repeats);
  }
  py::dict d;
  d["fmas_per_second"] = rate.fmas_per_second;
  d["threads"] = rate.threads;
  d["isa"] = ncap::kernels::isa_name(rate.isa);
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "ncap's compiled CPU core (private; use ncap.beff / ncap.degrees)";
  register_ncap_exceptions();
  export_spec_constants(m);
  m.def("beff", &beff, py::arg("acts"), py::arg("derivs"), py::arg("grads"), py::arg("per_sample"),
        py::arg("threads") = 0, py::arg("strategy") = "auto",
        "Closed-form beta_eff terms (SPEC section 3) as a dict. strategy: 'auto', or 'gram' / 'rows' "
        "to force how the batch numerator is summed (tests).");
  m.def("degrees", &degrees, py::arg("acts"), py::arg("derivs"), py::arg("grads"), py::arg("threads") = 0,
        "Per-layer (delta_in, delta_out) in Keras layout (SPEC section 2).");
  m.def("available_threads", &ncap::available_threads, "Threads the kernel uses when threads=0.");
  m.def("numerator_strategies", &numerator_strategies, py::arg("widths"), py::arg("batch"),
        "'gram' or 'rows' for each numerator layer l = 2..L-1, as strategy='auto' plans them.");
  m.def("in_forked_child", &ncap::in_forked_child,
        "True in a process forked after ncap was imported (the kernel then runs on one thread).");
  m.def("isa", [] { return std::string(ncap::kernels::isa_name(ncap::kernels::table().isa)); },
        "The instruction set the kernels use: 'avx512', 'avx2' or 'generic'.");
  m.def("supported_isas", &supported_isas, "Instruction sets this build can use on this CPU, best last.");
  m.def(
      "_force_isa",
      [](const std::string& name) {
        const std::string before = ncap::kernels::isa_name(ncap::kernels::table().isa);
        if (!ncap::kernels::force_isa(isa_of(name)))
          throw py::value_error("isa: '" + name + "' is not supported by this CPU or build");
        return before;
      },
      py::arg("isa"), "Use another instruction set's kernels from now on (tests and benchmarks; not thread-safe).");
  m.def("fma_peak", &fma_peak, py::arg("threads") = 1, py::arg("seconds") = 0.2, py::arg("isa") = "",
        py::arg("repeats") = 5,
        "Benchmark helper: float64 multiply-adds per second of a register-bound loop on `threads` threads.");
  // ncap runs on its own helper threads (cpp/src/parallel.cpp), never OpenMP's.
  m.attr("openmp") = false;
}
