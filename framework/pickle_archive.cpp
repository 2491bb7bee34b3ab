#include "framework/pickle_archive.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <vector>

namespace fmam {

// The steps of libtorch 1.13's pickle_save (torch/csrc/jit/serialization/pickle.cpp), with the
// zip writer's output sent to `out` instead of a growing vector. The pickle program itself holds
// only references to the tensors (a few KB); their bytes are records of their own.
void write_pickle_archive(const c10::IValue& value, std::ostream& out) {
  std::vector<char> program;
  torch::jit::Pickler pickler([&](const char* bytes, size_t n) { program.insert(program.end(), bytes, bytes + n); });
  pickler.protocol();
  pickler.pushIValue(value);
  pickler.stop();

  // The writer always reports every byte taken: a short count makes the zip writer throw, and
  // its destructor then finalises the archive, writes again and throws a second time during the
  // unwinding, which terminates the process (found by PickleArchiveTest on a "full disk"). A
  // failed stream stays failed, so the caller sees it afterwards.
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* bytes, size_t n) -> size_t {
    if (out) out.write(static_cast<const char*>(bytes), std::streamsize(n));
    return n;
  });
  torch::jit::writeArchiveAndTensors("data", program.data(), program.size(), pickler.tensorData(), writer);
  writer.writeEndOfFile();
}

}  // namespace fmam
