// Shared by the CPU and CUDA bindings: core results to Python objects, core
// exceptions to Python exceptions.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <vector>

#include "ncap/core.hpp"

namespace py = pybind11;

inline void register_ncap_exceptions() {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ncap::ArgumentError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const ncap::WorkspaceError& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });
}

// The SPEC constants the Python side needs, from their one home (ncap/core.hpp).
inline void export_spec_constants(py::module_& m) {
  m.attr("DEGENERATE_RTOL") = ncap::kDegenerateRtol;
  m.attr("MIN_BETA_LAYERS") = ncap::kMinBetaLayers;
  m.attr("MIN_DEGREE_LAYERS") = ncap::kMinDegreeLayers;
  m.attr("MAX_THREADS") = ncap::kMaxThreads;
}

inline py::array_t<double> matrix_of(const std::vector<double>& v, py::ssize_t rows, py::ssize_t cols) {
  py::array_t<double> out({rows, cols});
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

inline py::dict result_dict(const ncap::BetaTerms& r, bool per_sample) {
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
    py::array_t<bool> degenerate(B);
    std::copy(r.degenerate.begin(), r.degenerate.end(), degenerate.mutable_data());
    d["degenerate"] = degenerate;
    d["layer_numerator"] = matrix_of(r.layer_numerator, L, B);
    d["layer_denominator"] = matrix_of(r.layer_denominator, L, B);
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

// NumPy outputs for ncap::degrees, allocated once the shapes are known.
struct DegreeOutputs {
  std::vector<py::array_t<double>> ins, outs;
  std::vector<double*> in_ptrs, out_ptrs;

  explicit DegreeOutputs(const std::vector<int64_t>& widths) {
    for (size_t l = 1; l < widths.size(); ++l) {
      ins.emplace_back(std::vector<py::ssize_t>{widths[l - 1], widths[l]});
      outs.emplace_back(std::vector<py::ssize_t>{widths[l - 1], widths[l]});
      in_ptrs.push_back(ins.back().mutable_data());
      out_ptrs.push_back(outs.back().mutable_data());
    }
  }

  py::list as_list() const {
    py::list result;
    for (size_t k = 0; k < ins.size(); ++k) result.append(py::make_tuple(ins[k], outs[k]));
    return result;
  }
};
