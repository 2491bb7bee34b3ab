// The floating-point operations of the convolutions (forward and backward) and matrix products
// each thread runs (a multiply-add counts 2), observed through libtorch's op callbacks
// (RecordFunction) while a FlopCounting is alive: fmam bench divides them by each node's time for
// its GFLOP/s, fmam train by each epoch's time. Other ops
// (ReLU, BatchNorm, pooling, copies) are not counted: they are a few percent of the arithmetic
// and none of the multiply-adds a CPU's peak is quoted in.
#pragma once

namespace fmam {

// While alive, every thread's torch ops are counted (a small cost per op: time with it off).
class FlopCounting {
 public:
  FlopCounting();
  ~FlopCounting();
  FlopCounting(const FlopCounting&) = delete;
  FlopCounting& operator=(const FlopCounting&) = delete;

 private:
  unsigned long long handle_;
};

// Adds work that runs outside torch's op callbacks (the int8 teacher calls its packed
// convolutions directly) to this thread's total and all threads', while a FlopCounting is alive;
// otherwise does nothing.
void count_flops(double flops);

// This thread's running total: read it before and after a piece of work.
double thread_flops();

// All threads' running total since the process started (whole operations; training runs the
// teacher and the learning step on different threads).
double all_threads_flops();

}  // namespace fmam
