// torch::pickle_save's file format (the zip archive that torch.load and torch::pickle_load read),
// written straight into a stream.
//
// Why not pickle_save: it returns the whole archive as one std::vector grown by doubling, so each
// save touches about twice the file's size in fresh memory, and every fresh page is a page fault
// the kernel must zero. A training checkpoint (62 MB for RKD+FMAM on resnet18, more on wider
// backbones) is written every epoch: on the 2-core VM those faults were about 60 % of all page
// faults of `fmam train` (perf record -e page-faults, docs/PERFORMANCE.md). Streamed, the
// archive's bytes go to the file as they are made.
#pragma once

#include <ATen/core/ivalue.h>

#include <ostream>

namespace fmam {

// Writes `value` as torch::pickle_save(value) would return it, byte for byte. A failing stream
// (disk full) is left failed, not thrown: check it afterwards (atomic_write_stream does, and
// throws naming the file).
void write_pickle_archive(const c10::IValue& value, std::ostream& out);

}  // namespace fmam
