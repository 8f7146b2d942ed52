// A test producer of CUDA tensors (ncap._core_cuda.DeviceArray).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>

namespace py = pybind11;

namespace ncap::cuda {

class DeviceArray {
 public:
  // Copies the memory `host` spans (any strides, negative and zero included)
  // to CUDA device `device`, `pad_bytes` past a 256-byte boundary, and exports
  // it with host's shape and strides. host_memory keeps the bytes in host
  // memory while still saying "CUDA" (the consumer's pointer check must
  // refuse it; usable without a GPU). offset_in_pointer puts the offset of
  // element [0, 0] into the data pointer instead of DLPack's byte_offset.
  // stream_handshake=False behaves as tf.Tensor: a stream argument raises, and
  // no synchronisation happens. dlpack_device >= 0 overrides the device id
  // the capsule names.
  DeviceArray(const py::array& host, int device, bool host_memory, int64_t pad_bytes, bool offset_in_pointer,
              bool stream_handshake, int dlpack_device);

  py::tuple dlpack_device() const;
  py::capsule dlpack(const py::object& stream);
  // Writes `values` on this array's own stream after `delay_ms` of GPU time
  // and returns at once: a producer whose data is not ready yet.
  void overwrite_later(const py::array& values, double delay_ms);

  long exports() const;   // capsules handed out
  long releases() const;  // DLPack deleters run
  py::list requested_streams() const;  // the stream argument of every __dlpack__ call

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace ncap::cuda
