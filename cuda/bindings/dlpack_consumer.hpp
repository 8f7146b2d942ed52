// Taking CUDA tensors through DLPack: one producer per argument, checked and
// held (capsule consumed, deleter called exactly once) for the whole call.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "dlpack_min.h"
#include "ncap/core.hpp"

namespace py = pybind11;

namespace ncap::cuda {

// One argument's DLPack capsule, consumed; hands the tensor back to its
// producer (the DLPack deleter) when destroyed. Destroy with the GIL held.
class BorrowedTensor {
 public:
  BorrowedTensor(py::object capsule, std::string name);
  BorrowedTensor(BorrowedTensor&& other) noexcept;
  BorrowedTensor(const BorrowedTensor&) = delete;
  BorrowedTensor& operator=(const BorrowedTensor&) = delete;
  BorrowedTensor& operator=(BorrowedTensor&&) = delete;
  ~BorrowedTensor();

  // The checked view: float16/32/64, 2-D, aligned, and memory that really is
  // on CUDA device `device`.
  MatrixView view(int device) const;

 private:
  std::string name_;
  dlpack::ManagedTensor* managed_ = nullptr;
};

// All arrays of one call, on one device, held until the object is destroyed.
struct HeldTrace {
  std::vector<BorrowedTensor> owners;
  Trace trace;
  int device = -1;
  // A producer refused the stream handshake: wait for the whole device first.
  bool unordered_producer = false;
};

// Asks every producer for its capsule with ncap's stream of their device (the
// DLPack stream handshake: the producer orders that stream after its writes),
// then checks each tensor. Needs the GIL; errors name the argument.
HeldTrace hold(const py::sequence& acts, const py::sequence& derivs, const py::sequence& grads);

}  // namespace ncap::cuda
