// The executor on small test-only nodes: pipelining, bounded memory, ordering, concurrency,
// fan-in, failures, drops, batching, source nodes; and NodeRunner. Waits are sleeps (not busy
// loops), and the concurrency tests run until they see what they look for (TBB may lend a run
// its second thread late on a loaded machine), so they hold on a busy 2-core box.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <c10/core/GradMode.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <opencv2/imgcodecs.hpp>

#include "framework/executor.h"
#include "framework/graph.h"
#include "framework/io.h"
#include "framework/node_runner.h"
#include "framework/registry.h"
#include "framework/stateful.h"
#include "framework/tensor_types.h"
#include "framework/types.h"
#include "nodes/image_source_node.h"
#include "tests/support/helpers.h"

namespace fmam {

// ---- a test-only data type whose payloads are counted ----------------------------------------

namespace {
std::atomic<int> g_live_blobs{0};
std::atomic<int> g_max_live_blobs{0};

struct BlobPayload {
  std::vector<uint8_t> bytes;
  BlobPayload(size_t n, uint8_t v) : bytes(n, v) {  // value-initialised: the pages are touched
    int now = ++g_live_blobs;
    int m = g_max_live_blobs.load();
    while (now > m && !g_max_live_blobs.compare_exchange_weak(m, now)) {
    }
  }
  ~BlobPayload() { --g_live_blobs; }
  BlobPayload(const BlobPayload&) = delete;
  BlobPayload& operator=(const BlobPayload&) = delete;
};

// One frame's large payload (~1 MB); copies share it, so the counter counts payloads.
struct TestBlob {
  std::shared_ptr<const BlobPayload> p;
};
}  // namespace

FMAM_DATA_TYPE(TestBlob, "TestBlob");

namespace {

using testing::AllOf;
using testing::HasSubstr;
using Clock = std::chrono::steady_clock;

void sleep_ms(int ms) {
  if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// What a test node saw, for the test to check afterwards.
struct Log {
  std::mutex m;
  std::vector<long long> started, completed;  // frame ids, in call / completion order
  std::atomic<int> running{0}, max_running{0};
  std::atomic<int> finishes{0};
  long long completed_at_finish = -1;

  void begin(long long id) {
    {
      std::lock_guard<std::mutex> l(m);
      started.push_back(id);
    }
    int now = ++running;
    int mr = max_running.load();
    while (now > mr && !max_running.compare_exchange_weak(mr, now)) {
    }
  }
  void end(long long id) {
    --running;
    std::lock_guard<std::mutex> l(m);
    completed.push_back(id);
  }
  // Did some frame complete before an earlier one?
  bool reordered() {
    std::lock_guard<std::mutex> l(m);
    return !std::is_sorted(completed.begin(), completed.end());
  }
  void finish() {
    std::lock_guard<std::mutex> l(m);
    ++finishes;
    completed_at_finish = (long long)completed.size();
  }
};

// y = x + add, after sleeping ms plus a pseudo-random 0..jitter_ms (fixed per frame).
template <Concurrency C>
class SleepNodeT final : public Node {
 public:
  struct Params {
    int ms = 0;
    int jitter_ms = 0;
    double add = 0;
  };
  static constexpr In<Scalar> kIn{"x"};
  static constexpr Out<Scalar> kOut{"y"};
  static Contract contract() {
    return Contract(C == Concurrency::kSerial ? "TestSerialSleep" : "TestSleep")
        .in(kIn, "a number")
        .out(kOut, "x + add")
        .param(&Params::ms, "ms", "sleep per frame", Range{0, 1000})
        .param(&Params::jitter_ms, "jitter_ms", "extra random sleep per frame, at most", Range{0, 1000})
        .param(&Params::add, "add", "added to x")
        .concurrency(C);
  }
  explicit SleepNodeT(const Params& p) : p_(p) {}
  void process(Context& ctx) override {
    log.begin(ctx.frame_id());
    int extra = 0;
    if (p_.jitter_ms > 0) {
      std::mt19937 rng(unsigned(ctx.frame_id()) * 2654435761u + 12345u);
      extra = int(rng() % unsigned(p_.jitter_ms + 1));
    }
    sleep_ms(p_.ms + extra);
    const double x = kIn(ctx).get().value;
    kOut(ctx).send(Scalar{x + p_.add});
    log.end(ctx.frame_id());
  }
  void finish() override { log.finish(); }
  Log log;

 private:
  Params p_;
};
using TestSleepNode = SleepNodeT<Concurrency::kUnlimited>;
using TestSerialSleepNode = SleepNodeT<Concurrency::kSerial>;

// A source node: no inputs, y = frame id.
class TestSourceNode final : public Node {
 public:
  struct Params {};
  static constexpr Out<Scalar> kOut{"y"};
  static Contract contract() { return Contract("TestSource").out(kOut, "the frame id").concurrency(Concurrency::kSerial); }
  explicit TestSourceNode(const Params&) {}
  void process(Context& ctx) override {
    log.begin(ctx.frame_id());
    {
      std::lock_guard<std::mutex> l(log.m);
      sources.push_back(ctx.source());
    }
    kOut(ctx).send(Scalar{double(ctx.frame_id())});
    log.end(ctx.frame_id());
  }
  void finish() override { log.finish(); }
  Log log;
  std::vector<std::string> sources;
};

// sum = a + b; records both inputs per frame.
class TestJoinNode final : public Node {
 public:
  struct Params {};
  static constexpr In<Scalar> kA{"a"};
  static constexpr In<Scalar> kB{"b"};
  static constexpr Out<Scalar> kSum{"sum"};
  static Contract contract() { return Contract("TestJoin").in(kA, "a number").in(kB, "a number").out(kSum, "a + b"); }
  explicit TestJoinNode(const Params&) {}
  void process(Context& ctx) override {
    log.begin(ctx.frame_id());
    const double a = kA(ctx).get().value, b = kB(ctx).get().value;
    {
      std::lock_guard<std::mutex> l(log.m);
      seen.push_back({ctx.frame_id(), a, b});
    }
    kSum(ctx).send(Scalar{a + b});
    log.end(ctx.frame_id());
  }
  struct Seen {
    long long frame;
    double a, b;
  };
  Log log;
  std::vector<Seen> seen;
};

// Fails at frame `at` (or in finish()).
class TestThrowNode final : public Node {
 public:
  struct Params {
    int at = -1;
    bool in_finish = false;
  };
  static constexpr In<Scalar> kIn{"x"};
  static constexpr Out<Scalar> kOut{"y"};
  static Contract contract() {
    return Contract("TestThrow")
        .in(kIn, "a number")
        .out(kOut, "x")
        .param(&Params::at, "at", "frame to fail at")
        .param(&Params::in_finish, "in_finish", "fail in finish()");
  }
  explicit TestThrowNode(const Params& p) : p_(p) {}
  void process(Context& ctx) override {
    FMAM_CHECK(ctx.frame_id() != p_.at) << "cannot handle frame " << ctx.frame_id();
    kOut(ctx).send(kIn(ctx).get());
  }
  void finish() override { FMAM_CHECK(!p_.in_finish) << "cannot close the file"; }

 private:
  Params p_;
};

// Drops frame `at`; passes the others through.
class TestDropNode final : public Node {
 public:
  struct Params {
    int at = -1;
  };
  static constexpr In<Scalar> kIn{"x"};
  static constexpr Out<Scalar> kOut{"y"};
  static Contract contract() {
    return Contract("TestDrop").in(kIn, "a number").out(kOut, "x").param(&Params::at, "at", "frame to drop");
  }
  explicit TestDropNode(const Params& p) : p_(p) {}
  void process(Context& ctx) override {
    if (ctx.frame_id() == p_.at) return ctx.drop("bad frame " + std::to_string(ctx.frame_id()));
    kOut(ctx).send(kIn(ctx).get());
  }

 private:
  Params p_;
};

// Forgets to send its output, or sends the wrong type.
class TestNoSendNode final : public Node {
 public:
  struct Params {
    bool wrong_type = false;
  };
  static constexpr In<Scalar> kIn{"x"};
  static constexpr Out<Scalar> kOut{"y"};
  static Contract contract() {
    return Contract("TestNoSend")
        .in(kIn, "a number")
        .out(kOut, "never sent")
        .param(&Params::wrong_type, "wrong_type", "send a Mask");
  }
  explicit TestNoSendNode(const Params& p) : p_(p) {}
  void process(Context& ctx) override {
    if (p_.wrong_type) ctx.send_packet("y", Packet::make(Mask{}));
  }

 private:
  Params p_;
};

// Drops the Tensor of frame `at`.
class TestTensorDropNode final : public Node {
 public:
  struct Params {
    int at = -1;
  };
  static constexpr In<Tensor> kIn{"t"};
  static constexpr Out<Tensor> kOut{"t"};
  static Contract contract() {
    return Contract("TestTensorDrop").in(kIn, "a tensor").out(kOut, "t").param(&Params::at, "at", "frame to drop");
  }
  explicit TestTensorDropNode(const Params& p) : p_(p) {}
  void process(Context& ctx) override {
    if (ctx.frame_id() == p_.at) return ctx.drop("unreadable");
    kOut(ctx).send(kIn(ctx).get());
  }

 private:
  Params p_;
};

// A Trainable node declared unlimited: passes its tensor on after sleeping `ms`, and logs how many
// frames it held at once (a training run must give it one at a time).
class TestTrainableNode final : public Node, public Trainable {
 public:
  struct Params {
    int ms = 0;
  };
  static constexpr In<Tensor> kIn{"t"};
  static constexpr Out<Tensor> kOut{"t"};
  static Contract contract() {
    return Contract("TestTrainable")
        .in(kIn, "a tensor")
        .out(kOut, "t")
        .param(&Params::ms, "ms", "sleep per frame", Range{0, 1000})
        .concurrency(Concurrency::kUnlimited);
  }
  explicit TestTrainableNode(const Params& p) : p_(p) {}
  void process(Context& ctx) override {
    log.begin(ctx.frame_id());
    sleep_ms(p_.ms);
    kOut(ctx).send(kIn(ctx).get());
    log.end(ctx.frame_id());
  }
  std::vector<std::pair<std::string, at::Tensor>> named_state() const override { return {}; }
  void load_state(const std::map<std::string, at::Tensor>&) override {}
  std::vector<at::Tensor> parameters() const override { return {}; }
  void set_training(bool) override {}
  Log log;

 private:
  Params p_;
};

// y = x + (extra if connected): an optional input.
class TestOptionalNode final : public Node {
 public:
  struct Params {};
  static constexpr In<Scalar> kIn{"x"};
  static constexpr In<Scalar> kExtra{"extra"};
  static constexpr Out<Scalar> kOut{"y"};
  static Contract contract() {
    return Contract("TestOptional")
        .in(kIn, "a number")
        .in(kExtra, "added when connected", /*optional=*/true)
        .out(kOut, "x + extra");
  }
  explicit TestOptionalNode(const Params&) {}
  void process(Context& ctx) override {
    kOut(ctx).send(Scalar{kIn(ctx).get().value + (kExtra(ctx).has() ? kExtra(ctx).get().value : 0.0)});
  }
};

// Its constructor fails (e.g. a missing weights file).
class TestCtorThrowNode final : public Node {
 public:
  struct Params {};
  static constexpr In<Scalar> kIn{"x"};
  static Contract contract() { return Contract("TestCtorThrow").in(kIn, "a number"); }
  explicit TestCtorThrowNode(const Params&) { FMAM_CHECK(false) << "cannot load weights"; }
  void process(Context&) override {}
};

// A batchable, serial "network": u = 10 t + 1; records what each call saw.
class TestBatchNode final : public Node {
 public:
  struct Params {};
  static constexpr In<Tensor> kIn{"t"};
  static constexpr Out<Tensor> kOut{"u"};
  static Contract contract() {
    return Contract("TestBatch").in(kIn, "[B, 2, 3, 3]").out(kOut, "10 t + 1").batchable().concurrency(Concurrency::kSerial);
  }
  explicit TestBatchNode(const Params&) {}
  void process(Context& ctx) override {
    const at::Tensor& t = kIn(ctx).get().t;
    FMAM_CHECK(t.size(0) == ctx.batch_size()) << "dim 0 is " << t.size(0) << ", batch_size() " << ctx.batch_size();
    Call c;
    c.first_frame = ctx.frame_id();
    c.batch_size = ctx.batch_size();
    c.sources = ctx.sources();
    c.grad_enabled = c10::GradMode::is_enabled();
    for (int64_t b = 0; b < t.size(0); ++b) c.values.push_back(t[b][0][0][0].item<float>());
    calls.push_back(c);
    kOut(ctx).send(Tensor{t * 10 + 1});
  }
  void finish() override {
    ++finishes;
    calls_at_finish = calls.size();
  }
  struct Call {
    long long first_frame;
    int batch_size;
    std::vector<std::string> sources;
    std::vector<float> values;
    bool grad_enabled = true;
  };
  std::vector<Call> calls;
  int finishes = 0;
  size_t calls_at_finish = 0;
};

// Batchable, but its input type cannot be stacked.
class TestBatchScalarNode final : public Node {
 public:
  struct Params {};
  static constexpr In<Scalar> kIn{"x"};
  static Contract contract() { return Contract("TestBatchScalar").in(kIn, "a number").batchable(); }
  explicit TestBatchScalarNode(const Params&) {}
  void process(Context&) override {}
};

// x -> a new ~1 MB payload per frame.
class TestBlobMakeNode final : public Node {
 public:
  struct Params {
    int bytes = 1 << 20;
  };
  static constexpr In<Scalar> kIn{"x"};
  static constexpr Out<TestBlob> kOut{"blob"};
  static Contract contract() {
    return Contract("TestBlobMake").in(kIn, "a number").out(kOut, "payload").param(&Params::bytes, "bytes", "payload size");
  }
  explicit TestBlobMakeNode(const Params& p) : p_(p) {}
  void process(Context& ctx) override {
    kOut(ctx).send(TestBlob{std::make_shared<const BlobPayload>(size_t(p_.bytes), uint8_t(ctx.frame_id() & 255))});
  }

 private:
  Params p_;
};

// payload -> a checksum of it.
class TestBlobSumNode final : public Node {
 public:
  struct Params {};
  static constexpr In<TestBlob> kIn{"blob"};
  static constexpr Out<Scalar> kOut{"sum"};
  static Contract contract() { return Contract("TestBlobSum").in(kIn, "payload").out(kOut, "first + last byte + size"); }
  explicit TestBlobSumNode(const Params&) {}
  void process(Context& ctx) override {
    const auto& b = kIn(ctx).get().p->bytes;
    kOut(ctx).send(Scalar{double(b.front()) + double(b.back()) + double(b.size())});
  }
};

void register_test_nodes() {
  static const bool once = [] {
    DataTypes::global().add({"TestBlob", "test-only counted payload", {}, {}});
    Registry& r = Registry::global();
    r.add(make_node_type<TestSleepNode>());
    r.add(make_node_type<TestSerialSleepNode>());
    r.add(make_node_type<TestSourceNode>());
    r.add(make_node_type<TestJoinNode>());
    r.add(make_node_type<TestThrowNode>());
    r.add(make_node_type<TestDropNode>());
    r.add(make_node_type<TestNoSendNode>());
    r.add(make_node_type<TestCtorThrowNode>());
    r.add(make_node_type<TestTensorDropNode>());
    r.add(make_node_type<TestOptionalNode>());
    r.add(make_node_type<TestBatchNode>());
    r.add(make_node_type<TestBatchScalarNode>());
    r.add(make_node_type<TestBlobMakeNode>());
    r.add(make_node_type<TestBlobSumNode>());
    r.add(make_node_type<TestTrainableNode>());
    return true;
  }();
  (void)once;
}

ValidatedGraph graph(const std::string& text) {
  register_test_nodes();
  return validate(parse_graph(text, "test.json"));
}

RunOptions options(int max_in_flight, int threads, int batch = 1) {
  RunOptions o;
  o.max_in_flight = max_in_flight;
  o.threads = threads;
  o.batch = batch;
  return o;
}

// A source of `n` frames: stream "x" = frame id, source = "imgs/frame_<id>.png".
Executor::Source scalar_source(long long n, const std::string& stream = "x") {
  auto k = std::make_shared<long long>(0);
  return [k, n, stream](Frame& f) {
    if (*k >= n) return false;
    char name[64];
    std::snprintf(name, sizeof name, "imgs/frame_%03lld.png", f.id());
    f.source = name;
    f.set(stream, Packet::make(Scalar{double(f.id())}));
    ++*k;
    return true;
  };
}

// A source of `n` frames: stream "t" = a [1, 2, 3, 3] tensor filled with the frame's number.
Executor::Source tensor_source(long long n) {
  auto k = std::make_shared<long long>(0);
  return [k, n](Frame& f) {
    if (*k >= n) return false;
    f.set("t", Packet::make(Tensor{at::full({1, 2, 3, 3}, float((*k)++))}));
    return true;
  };
}

// What the sink saw, in call order.
struct Sunk {
  long long id;
  bool dropped;
  std::string drop_reason;
  bool has_y;
  double y;
};
Executor::Sink collect(std::vector<Sunk>& out, const std::string& stream = "y") {
  return [&out, stream](const Frame& f) {
    Sunk s{f.id(), f.dropped, f.drop_reason, f.has(stream), 0.0};
    if (s.has_y) s.y = f.get<Scalar>(stream).value;
    out.push_back(s);
  };
}

template <class N>
N& node_as(Executor& e, const std::string& id) {
  return dynamic_cast<N&>(e.node(id));
}

int stat_index(const RunStats& s, const std::string& id) {
  for (size_t i = 0; i < s.nodes.size(); ++i)
    if (s.nodes[i].id == id) return int(i);
  ADD_FAILURE() << "no stats for node " << id;
  return 0;
}

// Runs f; a hang is a failure of its own, reported before the test binary is killed.
template <class F>
auto within_seconds(double seconds, F f) {
  auto fut = std::async(std::launch::async, std::move(f));
  if (fut.wait_for(std::chrono::duration<double>(seconds)) != std::future_status::ready) {
    std::fprintf(stderr, "FATAL: %s did not finish within %.0f s (the executor hangs)\n",
                 testing::UnitTest::GetInstance()->current_test_info()->name(), seconds);
    std::fflush(stderr);
    std::_Exit(3);
  }
  return fut.get();
}

bool overlaps(const std::pair<double, double>& a, const std::pair<double, double>& b) {
  return a.first < b.second && b.first < a.second;
}

// ---- pipelining ----------------------------------------------------------------------------

// Two serial 20 ms stages ("decode" then "network"): while the network works on frame k, frame
// k+1 already decodes, so 24 frames take about 25 x 20 ms, not 48 x 20 ms.
TEST(ExecutorTest, StagesPipelineAcrossFrames) {
  const int kFrames = 24;
  Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar"}, "nodes": [
      {"id": "decode", "type": "TestSerialSleep", "in": {"x": "x"}, "out": {"y": "decoded"}, "params": {"ms": 20}},
      {"id": "network", "type": "TestSerialSleep", "in": {"x": "decoded"}, "out": {"y": "y"}, "params": {"ms": 20}}]})"),
              options(8, 2));
  std::vector<Sunk> out;
  const RunStats s = ex.run(scalar_source(kFrames), collect(out), /*record_intervals=*/true);
  ASSERT_EQ(out.size(), size_t(kFrames));
  const auto& a = s.intervals[stat_index(s, "decode")];
  const auto& b = s.intervals[stat_index(s, "network")];
  ASSERT_EQ(a.size(), size_t(kFrames));
  ASSERT_EQ(b.size(), size_t(kFrames));
  // Serial nodes run in frame order, so interval k is frame k.
  int overlapping = 0;
  for (int k = 0; k + 1 < kFrames; ++k) {
    EXPECT_LE(a[k].second, b[k].first + 1e-3) << "network ran frame " << k << " before it was decoded";
    overlapping += overlaps(a[k + 1], b[k]);
  }
  // Ideally all 23; a loaded machine may lend the second thread late, so half is enough.
  EXPECT_GE(overlapping, (kFrames - 1) / 2) << "decode of frame k+1 should run while the network works on frame k";
  const double serial_sum = s.nodes[0].total_ms + s.nodes[1].total_ms;
  EXPECT_GE(serial_sum, kFrames * 2 * 20 * 0.95);
  // Ideally (kFrames + 1) / (2 kFrames) = 0.52 of the serial sum.
  EXPECT_LT(s.wall_ms, 0.8 * serial_sum) << "wall " << s.wall_ms << " ms vs serial sum " << serial_sum << " ms";
  EXPECT_EQ(s.nodes[0].calls, kFrames);
  EXPECT_EQ(s.nodes[0].call_ms.size(), size_t(kFrames));
}

// ---- bounded memory ------------------------------------------------------------------------

long rss_kb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  return -1;
}

// 2,000 frames of ~1 MB each with max_in_flight 4: only a handful of payloads live at once, and
// the process does not grow (2 GB would flow through in total).
TEST(ExecutorTest, FramesInFlightAndMemoryStayBounded) {
  const int kFrames = 2000, kMaxInFlight = 4;
  Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar"}, "nodes": [
      {"id": "make", "type": "TestBlobMake", "in": {"x": "x"}, "out": {"blob": "blob"}},
      {"id": "sum", "type": "TestBlobSum", "in": {"blob": "blob"}, "out": {"sum": "y"}}]})"),
              options(kMaxInFlight, 2));
  g_max_live_blobs = 0;
  const long rss_before = rss_kb();
  long rss_max = rss_before;
  long long n = 0;
  bool sums_ok = true;
  // Frames the source has filled and the sink not yet seen: what max_in_flight bounds.
  std::atomic<int> outstanding{0}, max_outstanding{0};
  auto source = scalar_source(kFrames);
  const RunStats s = ex.run(
      [&](Frame& f) {
        if (!source(f)) return false;
        int now = ++outstanding, m = max_outstanding.load();
        while (now > m && !max_outstanding.compare_exchange_weak(m, now)) {
        }
        return true;
      },
      [&](const Frame& f) {
        --outstanding;
        sums_ok &= f.get<Scalar>("y").value == 2.0 * double(f.id() & 255) + double(1 << 20);
        if (++n % 100 == 0) rss_max = std::max(rss_max, rss_kb());
      });
  EXPECT_TRUE(sums_ok);
  EXPECT_EQ(n, kFrames);
  EXPECT_EQ(s.frames, kFrames);
  EXPECT_EQ(g_live_blobs.load(), 0) << "payloads outlived the run";
  EXPECT_LE(g_max_live_blobs.load(), kMaxInFlight + 2);
  EXPECT_GE(s.peak_in_flight, 1);
  EXPECT_LE(max_outstanding.load(), kMaxInFlight) << "source() ran that far ahead of the sink";
  EXPECT_LE(s.peak_in_flight, kMaxInFlight);
  ASSERT_GT(rss_before, 0);
#ifndef __SANITIZE_ADDRESS__
  EXPECT_LT(rss_max - rss_before, 50 * 1024) << "RSS grew from " << rss_before << " kB to " << rss_max << " kB";
  EXPECT_LT(rss_kb() - rss_before, 50 * 1024);
#else
  // AddressSanitizer keeps freed memory in quarantine (256 MB) to catch use after free, so RSS
  // grows by design there; the live-payload counts above still bound the memory.
  (void)rss_max;
#endif
}

// ---- ordering and concurrency --------------------------------------------------------------

// An unlimited node that finishes frames out of order (random sleeps): the sink still gets the
// frames in input order, each with its own result; a serial node after it sees them in order.
TEST(ExecutorTest, OutputsAndSerialNodesKeepInputOrder) {
  Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar"}, "nodes": [
      {"id": "jitter", "type": "TestSleep", "in": {"x": "x"}, "out": {"y": "j"}, "params": {"jitter_ms": 8, "add": 0.5}},
      {"id": "counter", "type": "TestSerialSleep", "in": {"x": "j"}, "out": {"y": "y"}, "params": {"add": 0.25}}]})"),
              options(8, 2));
  Log& jitter = node_as<TestSleepNode>(ex, "jitter").log;
  const Log& counter = node_as<TestSerialSleepNode>(ex, "counter").log;
  // At least 40 frames, and on until the unlimited node has finished frames out of order (on a
  // loaded machine TBB's second thread may join a run late); 400 at most.
  auto src = scalar_source(400);
  long long frames = 0;
  std::vector<Sunk> out;
  const RunStats s = ex.run(
      [&](Frame& f) {
        if (frames >= 40 && jitter.reordered()) return false;
        if (!src(f)) return false;
        ++frames;
        return true;
      },
      collect(out));
  ASSERT_GE(frames, 40);
  ASSERT_EQ(out.size(), size_t(frames));
  for (long long k = 0; k < frames; ++k) {
    EXPECT_EQ(out[k].id, k);
    EXPECT_FALSE(out[k].dropped);
    EXPECT_DOUBLE_EQ(out[k].y, k + 0.75) << "frame " << k;
  }
  std::vector<long long> in_order(frames);
  for (long long k = 0; k < frames; ++k) in_order[k] = k;
  // The test means something only if the unlimited node really finished frames out of order.
  EXPECT_TRUE(jitter.reordered()) << "no reordering happened upstream";
  EXPECT_THAT(jitter.completed, testing::UnorderedElementsAreArray(in_order));
  EXPECT_EQ(counter.started, in_order);
  EXPECT_EQ(counter.max_running.load(), 1);
  EXPECT_EQ(jitter.finishes.load(), 1);
  EXPECT_EQ(counter.finishes.load(), 1);
  // A serial node sees finish() after its last frame.
  EXPECT_EQ(counter.completed_at_finish, frames);
  EXPECT_EQ(s.frames, frames);
  EXPECT_EQ(s.dropped, 0);
}

TEST(ExecutorTest, UnlimitedNodesRunConcurrently) {
  Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar"}, "nodes": [
      {"id": "work", "type": "TestSleep", "in": {"x": "x"}, "out": {"y": "y"}, "params": {"ms": 10}}]})"),
              options(8, 2));
  const Log& log = node_as<TestSleepNode>(ex, "work").log;
  // On until two calls have overlapped (at least 12 frames, at most 300).
  auto src = scalar_source(300);
  long long frames = 0;
  std::vector<Sunk> out;
  ex.run(
      [&](Frame& f) {
        if (frames >= 12 && log.max_running.load() >= 2) return false;
        if (!src(f)) return false;
        ++frames;
        return true;
      },
      collect(out));
  EXPECT_EQ(out.size(), size_t(frames));
  EXPECT_GE(log.max_running.load(), 2) << "over " << frames << " frames";
}

// With one thread nothing runs at once, and the results are the same.
TEST(ExecutorTest, OneThreadStillRunsEverything) {
  Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar"}, "nodes": [
      {"id": "work", "type": "TestSleep", "in": {"x": "x"}, "out": {"y": "y"}, "params": {"jitter_ms": 2, "add": 1}}]})"),
              options(3, 1));
  std::vector<Sunk> out;
  ex.run(scalar_source(10), collect(out));
  ASSERT_EQ(out.size(), 10u);
  for (int k = 0; k < 10; ++k) EXPECT_DOUBLE_EQ(out[k].y, k + 1.0);
  EXPECT_EQ(node_as<TestSleepNode>(ex, "work").log.max_running.load(), 1);
}

// ---- fan-in --------------------------------------------------------------------------------

// Two parallel branches with random delays join in one node, which must get both values of the
// same frame; a second join mixes a graph input with a branch.
TEST(ExecutorTest, FanInJoinsTheSameFrame) {
  const int kFrames = 30;
  Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar", "z": "Scalar"}, "nodes": [
      {"id": "left", "type": "TestSleep", "in": {"x": "x"}, "out": {"y": "l"}, "params": {"jitter_ms": 6, "add": 1000}},
      {"id": "right", "type": "TestSleep", "in": {"x": "x"}, "out": {"y": "r"}, "params": {"jitter_ms": 6, "add": 2000}},
      {"id": "join", "type": "TestJoin", "in": {"a": "l", "b": "r"}, "out": {"sum": "y"}},
      {"id": "join_input", "type": "TestJoin", "in": {"a": "x", "b": "r"}, "out": {"sum": "z"}}]})"),
              options(8, 2));
  std::vector<Sunk> out, out_z;
  auto sink_y = collect(out), sink_z = collect(out_z, "z");
  ex.run(scalar_source(kFrames), [&](const Frame& f) {
    sink_y(f);
    sink_z(f);
  });
  ASSERT_EQ(out.size(), size_t(kFrames));
  for (int k = 0; k < kFrames; ++k) {
    EXPECT_DOUBLE_EQ(out[k].y, 2.0 * k + 3000) << "frame " << k;
    EXPECT_DOUBLE_EQ(out_z[k].y, 2.0 * k + 2000) << "frame " << k;
  }
  for (const char* id : {"join", "join_input"}) {
    const auto& seen = node_as<TestJoinNode>(ex, id).seen;
    ASSERT_EQ(seen.size(), size_t(kFrames)) << id;
    for (const auto& v : seen) {
      EXPECT_DOUBLE_EQ(v.b, v.frame + 2000.0) << id << " frame " << v.frame;
      EXPECT_DOUBLE_EQ(v.a, v.frame + (std::string(id) == "join" ? 1000.0 : 0.0)) << id << " frame " << v.frame;
    }
  }
}

// ---- failures ------------------------------------------------------------------------------

TEST(ExecutorTest, NodeFailureIsRethrownWithNodeFrameAndSource) {
  Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar"}, "nodes": [
      {"id": "pre", "type": "TestSleep", "in": {"x": "x"}, "out": {"y": "p"}, "params": {"jitter_ms": 3}},
      {"id": "x", "type": "TestThrow", "in": {"x": "p"}, "out": {"y": "q"}, "params": {"at": 17}},
      {"id": "post", "type": "TestSerialSleep", "in": {"x": "q"}, "out": {"y": "y"}}]})"),
              options(8, 2));
  std::vector<Sunk> out;
  bool thrown = within_seconds(30, [&] {
    try {
      ex.run(scalar_source(60), collect(out));
    } catch (const NodeError& e) {
      EXPECT_THAT(
          e.what(),
          HasSubstr(
              R"(test.json: node "x" (TestThrow): process() at frame 17 (imgs/frame_017.png) failed: cannot handle frame 17)"));
      EXPECT_EQ(e.node_id(), "x");
      EXPECT_EQ(e.node_type(), "TestThrow");
      EXPECT_EQ(e.frame(), 17);
      EXPECT_EQ(e.source(), "imgs/frame_017.png");
      return true;
    }
    return false;
  });
  EXPECT_TRUE(thrown) << "run() did not throw NodeError";
  // Frames reach the sink in order, so none at or after the failed one.
  for (const auto& s : out) EXPECT_LT(s.id, 17);
  for (const auto& f : node_as<TestSerialSleepNode>(ex, "post").log.started) EXPECT_NE(f, 17);
}

TEST(ExecutorTest, FailureInFinishIsReported) {
  Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar"}, "nodes": [
      {"id": "closer", "type": "TestThrow", "in": {"x": "x"}, "out": {"y": "y"}, "params": {"in_finish": true}}]})"),
              options(4, 2));
  std::vector<Sunk> out;
  within_seconds(30, [&] {
    EXPECT_THAT([&] { ex.run(scalar_source(5), collect(out)); },
                testing::ThrowsMessage<NodeError>(
                    HasSubstr(R"(test.json: node "closer" (TestThrow): finish() failed: cannot close the file)")));
  });
}

TEST(ExecutorTest, OutputNotSentOrOfTheWrongTypeIsANodeError) {
  for (const char* wrong_type : {"false", "true"}) {
    Executor ex(graph(std::string(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar"}, "nodes": [
        {"id": "lazy", "type": "TestNoSend", "in": {"x": "x"}, "out": {"y": "y"}, "params": {"wrong_type": )") +
                      wrong_type + "}}]}"),
                options(4, 2));
    std::vector<Sunk> out;
    within_seconds(30, [&] {
      // One frame: with more, whichever frame fails first is the one reported.
      EXPECT_THAT(
          [&] { ex.run(scalar_source(1), collect(out)); },
          testing::ThrowsMessage<NodeError>(AllOf(
              HasSubstr(R"(test.json: node "lazy" (TestNoSend): process() at frame 0 (imgs/frame_000.png) failed: output "y": )"),
              HasSubstr(std::string(wrong_type) == "true" ? "sent a Mask, declared Scalar"
                                                          : "process() returned without sending it"))));
    });
  }
}

// A failed run leaves the executor usable: the next run streams normally.
TEST(ExecutorTest, RunAfterAFailureWorks) {
  Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar"}, "nodes": [
      {"id": "boom", "type": "TestThrow", "in": {"x": "x"}, "out": {"y": "t"}, "params": {"at": 5}},
      {"id": "s", "type": "TestSerialSleep", "in": {"x": "t"}, "out": {"y": "y"}, "params": {"add": 1}}]})"),
              options(4, 2));
  within_seconds(30, [&] {
    std::vector<Sunk> out;
    EXPECT_THROW(ex.run(scalar_source(20), collect(out)), NodeError);
    out.clear();
    ex.run(scalar_source(5), collect(out));  // frames 0..4: no failure
    ASSERT_EQ(out.size(), 5u);
    for (int k = 0; k < 5; ++k) EXPECT_DOUBLE_EQ(out[k].y, k + 1.0);
  });
}

// The source callback failing (e.g. an unreadable list file) ends the run with its error.
TEST(ExecutorTest, SourceFailurePropagates) {
  Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar"}, "nodes": [
      {"id": "s", "type": "TestSleep", "in": {"x": "x"}, "out": {"y": "y"}, "params": {"ms": 1}}]})"),
              options(4, 2));
  auto ok = scalar_source(100);
  std::vector<Sunk> out;
  within_seconds(30, [&] {
    EXPECT_THAT(
        [&] {
          ex.run(
              [&](Frame& f) {
                if (f.id() == 6) throw Error("list.txt: cannot read line 7");
                return ok(f);
              },
              collect(out));
        },
        testing::ThrowsMessage<Error>(HasSubstr("list.txt: cannot read line 7")));
  });
  EXPECT_LE(out.size(), 6u);
}

TEST(ExecutorTest, OptionalInputMayStayUnconnected) {
  for (const bool connected : {false, true}) {
    const std::string extra = connected ? R"(, "extra": "x")" : "";
    Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar"}, "nodes": [
        {"id": "o", "type": "TestOptional", "in": {"x": "x")" +
                      extra + R"(}, "out": {"y": "y"}}]})"),
                options(4, 2));
    std::vector<Sunk> out;
    ex.run(scalar_source(4), collect(out));
    ASSERT_EQ(out.size(), 4u);
    for (int k = 0; k < 4; ++k) EXPECT_DOUBLE_EQ(out[k].y, connected ? 2.0 * k : k) << connected;
  }
}

TEST(ExecutorTest, FirstFrameIdOffsetsIdsAndKeepsOrder) {
  RunOptions o = options(4, 2);
  o.first_frame_id = 1000;
  Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar"}, "nodes": [
      {"id": "j", "type": "TestSleep", "in": {"x": "x"}, "out": {"y": "a"}, "params": {"jitter_ms": 4}},
      {"id": "s", "type": "TestSerialSleep", "in": {"x": "a"}, "out": {"y": "y"}}]})"),
              o);
  std::vector<Sunk> out;
  ex.run(scalar_source(12), collect(out));
  ASSERT_EQ(out.size(), 12u);
  for (int k = 0; k < 12; ++k) {
    EXPECT_EQ(out[k].id, 1000 + k);
    EXPECT_DOUBLE_EQ(out[k].y, 1000.0 + k);  // the source writes the frame id
  }
  std::vector<long long> expected(12);
  for (int k = 0; k < 12; ++k) expected[k] = 1000 + k;
  EXPECT_EQ(node_as<TestSerialSleepNode>(ex, "s").log.started, expected);
}

TEST(ExecutorTest, ConstructorFailureNamesTheNode) {
  EXPECT_THAT(
      [] {
        Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "nodes": [
        {"id": "net", "type": "TestCtorThrow", "in": {"x": "x"}}]})"));
      },
      testing::ThrowsMessage<Error>(HasSubstr(R"(test.json: node "net" (TestCtorThrow): cannot load weights)")));
}

// ---- dropped frames ------------------------------------------------------------------------

// A node drops frame 3: the sink gets it marked dropped with the node's reason, the other
// frames go on, and no node downstream (nor a join that needs it) runs on it.
TEST(ExecutorTest, DroppedFrameSkipsDownstreamAndReachesTheSink) {
  Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar"}, "nodes": [
      {"id": "dropper", "type": "TestDrop", "in": {"x": "x"}, "out": {"y": "d"}, "params": {"at": 3}},
      {"id": "other", "type": "TestSleep", "in": {"x": "x"}, "out": {"y": "o"}, "params": {"jitter_ms": 2}},
      {"id": "after", "type": "TestSerialSleep", "in": {"x": "d"}, "out": {"y": "a"}},
      {"id": "join", "type": "TestJoin", "in": {"a": "a", "b": "o"}, "out": {"sum": "y"}}]})"),
              options(4, 2));
  std::vector<Sunk> out;
  const RunStats s = ex.run(scalar_source(8), collect(out));
  ASSERT_EQ(out.size(), 8u);
  for (int k = 0; k < 8; ++k) {
    EXPECT_EQ(out[k].id, k);
    EXPECT_EQ(out[k].dropped, k == 3) << k;
    EXPECT_EQ(out[k].has_y, k != 3) << k;
    if (k != 3) {
      EXPECT_DOUBLE_EQ(out[k].y, 2.0 * k);
    }
  }
  EXPECT_EQ(out[3].drop_reason, R"(test.json: node "dropper" (TestDrop): bad frame 3)");
  EXPECT_EQ(node_as<TestSerialSleepNode>(ex, "after").log.started, (std::vector<long long>{0, 1, 2, 4, 5, 6, 7}));
  EXPECT_EQ(node_as<TestJoinNode>(ex, "join").seen.size(), 7u);
  for (const auto& v : node_as<TestJoinNode>(ex, "join").seen) EXPECT_NE(v.frame, 3);
  EXPECT_EQ(s.frames, 8);
  EXPECT_EQ(s.dropped, 1);
}

// ---- batching ------------------------------------------------------------------------------

// batch=4 over 10 frames: a batchable node gets [0..3], [4..7], then the partial [8, 9], each
// stacked on dim 0; its output is split back into frames, in order; finish() once, at the end.
TEST(ExecutorTest, BatchableNodeGetsStackedFramesAndSplitsThemBack) {
  const int kFrames = 10;
  Executor ex(graph(R"({"schema": 1, "inputs": {"t": "Tensor"}, "outputs": {"u": "Tensor"}, "nodes": [
      {"id": "net", "type": "TestBatch", "in": {"t": "t"}, "out": {"u": "u"}}]})"),
              options(4, 2, /*batch=*/4));
  long long k = 0;
  std::vector<at::Tensor> got;
  std::vector<long long> ids;
  const RunStats s = ex.run(
      [&](Frame& f) {
        if (k >= kFrames) return false;
        f.source = "f" + std::to_string(k);
        f.set("t", Packet::make(Tensor{at::full({1, 2, 3, 3}, float(k))}));
        ++k;
        return true;
      },
      [&](const Frame& f) {
        ids.push_back(f.id());
        got.push_back(f.get<Tensor>("u").t);
      });
  ASSERT_EQ(got.size(), size_t(kFrames));
  for (int i = 0; i < kFrames; ++i) {
    EXPECT_EQ(ids[i], i);
    EXPECT_EQ(got[i].sizes(), (at::IntArrayRef{1, 2, 3, 3})) << "frame " << i;
    EXPECT_TRUE(at::equal(got[i], at::full({1, 2, 3, 3}, 10.0f * i + 1))) << "frame " << i;
  }
  const auto& net = node_as<TestBatchNode>(ex, "net");
  ASSERT_EQ(net.calls.size(), 3u);
  EXPECT_EQ(net.calls[0].batch_size, 4);
  EXPECT_EQ(net.calls[1].batch_size, 4);
  EXPECT_EQ(net.calls[2].batch_size, kFrames % 4);
  EXPECT_EQ(net.calls[0].values, (std::vector<float>{0, 1, 2, 3}));
  EXPECT_EQ(net.calls[1].values, (std::vector<float>{4, 5, 6, 7}));
  EXPECT_EQ(net.calls[2].values, (std::vector<float>{8, 9}));
  EXPECT_EQ(net.calls[1].first_frame, 4);
  EXPECT_EQ(net.calls[1].sources, (std::vector<std::string>{"f4", "f5", "f6", "f7"}));
  EXPECT_EQ(net.finishes, 1);
  EXPECT_EQ(net.calls_at_finish, 3u);
  EXPECT_EQ(s.nodes[0].calls, 3);
  EXPECT_EQ(s.frames, kFrames);
}

// A frame dropped upstream leaves its batch one short; the others still get their own results.
TEST(ExecutorTest, BatchSkipsADroppedFrame) {
  Executor ex(graph(R"({"schema": 1, "inputs": {"t": "Tensor"}, "outputs": {"u": "Tensor"}, "nodes": [
      {"id": "drop", "type": "TestTensorDrop", "in": {"t": "t"}, "out": {"t": "kept"}, "params": {"at": 1}},
      {"id": "net", "type": "TestBatch", "in": {"t": "kept"}, "out": {"u": "u"}}]})"),
              options(4, 2, /*batch=*/4));
  long long k = 0;
  std::vector<Sunk> out;
  std::vector<float> values;
  ex.run(
      [&](Frame& f) {
        if (k >= 6) return false;
        f.set("t", Packet::make(Tensor{at::full({1, 2, 3, 3}, float(k++))}));
        return true;
      },
      [&](const Frame& f) {
        out.push_back({f.id(), f.dropped, f.drop_reason, f.has("u"), 0.0});
        values.push_back(f.has("u") ? f.get<Tensor>("u").t[0][1][2][2].item<float>() : -1.0f);
      });
  ASSERT_EQ(out.size(), 6u);
  EXPECT_TRUE(out[1].dropped);
  EXPECT_EQ(out[1].drop_reason, R"(test.json: node "drop" (TestTensorDrop): unreadable)");
  EXPECT_EQ(values, (std::vector<float>{1, -1, 21, 31, 41, 51}));
  const auto& net = node_as<TestBatchNode>(ex, "net");
  ASSERT_EQ(net.calls.size(), 2u);
  EXPECT_EQ(net.calls[0].values, (std::vector<float>{0, 2, 3}));
  EXPECT_EQ(net.calls[0].batch_size, 3);
  EXPECT_EQ(net.calls[1].values, (std::vector<float>{4, 5}));
}

TEST(ExecutorTest, BatchOfOneCallsPerFrame) {
  Executor ex(graph(R"({"schema": 1, "inputs": {"t": "Tensor"}, "outputs": {"u": "Tensor"}, "nodes": [
      {"id": "net", "type": "TestBatch", "in": {"t": "t"}, "out": {"u": "u"}}]})"),
              options(4, 2, /*batch=*/1));
  long long k = 0;
  size_t n = 0;
  ex.run(
      [&](Frame& f) {
        if (k >= 3) return false;
        f.set("t", Packet::make(Tensor{at::ones({1, 2, 3, 3})}));
        ++k;
        return true;
      },
      [&](const Frame&) { ++n; });
  EXPECT_EQ(n, 3u);
  const auto& net = node_as<TestBatchNode>(ex, "net");
  ASSERT_EQ(net.calls.size(), 3u);
  for (const auto& c : net.calls) EXPECT_EQ(c.batch_size, 1);
}

TEST(ExecutorTest, BatchingATypeThatCannotStackIsAnError) {
  EXPECT_THAT(
      [] {
        Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "nodes": [
        {"id": "b", "type": "TestBatchScalar", "in": {"x": "x"}}]})"),
                    options(4, 2, /*batch=*/2));
      },
      testing::ThrowsMessage<Error>(
          HasSubstr(R"(test.json: node "b" (TestBatchScalar): input "x" of type Scalar cannot be batched)")));
}

// ---- sources and empty graphs --------------------------------------------------------------

TEST(ExecutorTest, SourceNodeRunsOncePerFrame) {
  Executor ex(graph(R"({"schema": 1, "outputs": {"y": "Scalar"}, "nodes": [
      {"id": "src", "type": "TestSource", "out": {"y": "s"}},
      {"id": "inc", "type": "TestSleep", "in": {"x": "s"}, "out": {"y": "y"}, "params": {"add": 1}}]})"),
              options(4, 2));
  long long k = 0;
  std::vector<Sunk> out;
  const RunStats s = ex.run(
      [&](Frame& f) {
        if (k >= 5) return false;
        f.source = "cam" + std::to_string(k++);
        return true;
      },
      collect(out));
  ASSERT_EQ(out.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_DOUBLE_EQ(out[i].y, i + 1.0);
  auto& src = node_as<TestSourceNode>(ex, "src");
  EXPECT_EQ(src.log.started, (std::vector<long long>{0, 1, 2, 3, 4}));
  EXPECT_EQ(src.sources, (std::vector<std::string>{"cam0", "cam1", "cam2", "cam3", "cam4"}));
  EXPECT_EQ(src.log.finishes.load(), 1);
  EXPECT_EQ(s.nodes[stat_index(s, "src")].calls, 5);
}

// No nodes at all: a graph output that is a graph input passes straight through.
TEST(ExecutorTest, GraphWithoutNodesPassesInputsToOutputs) {
  Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"x": "Scalar"}, "nodes": []})"), options(2, 2));
  std::vector<Sunk> out;
  const RunStats s = within_seconds(30, [&] { return ex.run(scalar_source(6), collect(out, "x")); });
  ASSERT_EQ(out.size(), 6u);
  for (int k = 0; k < 6; ++k) {
    EXPECT_EQ(out[k].id, k);
    EXPECT_DOUBLE_EQ(out[k].y, k);
  }
  EXPECT_EQ(s.frames, 6);
  EXPECT_TRUE(s.nodes.empty());
}

TEST(ExecutorTest, EmptySourceRunsNoFrameButFinishesNodes) {
  Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar"}, "nodes": [
      {"id": "s", "type": "TestSerialSleep", "in": {"x": "x"}, "out": {"y": "y"}}]})"),
              options(2, 2));
  std::vector<Sunk> out;
  const RunStats s = within_seconds(30, [&] { return ex.run(scalar_source(0), collect(out)); });
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(s.frames, 0);
  EXPECT_EQ(node_as<TestSerialSleepNode>(ex, "s").log.finishes.load(), 1);
}

// A second run() on the same executor streams again from frame 0.
TEST(ExecutorTest, RunCanBeCalledTwice) {
  Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"y": "Scalar"}, "nodes": [
      {"id": "s", "type": "TestSleep", "in": {"x": "x"}, "out": {"y": "y"}, "params": {"add": 2}}]})"),
              options(2, 2));
  for (int run = 0; run < 2; ++run) {
    std::vector<Sunk> out;
    ex.run(scalar_source(4), collect(out));
    ASSERT_EQ(out.size(), 4u);
    for (int k = 0; k < 4; ++k) EXPECT_DOUBLE_EQ(out[k].y, k + 2.0);
  }
  EXPECT_THAT([&] { ex.node("nope"); }, testing::ThrowsMessage<Error>(HasSubstr(R"(no node "nope" in graph test.json)")));
}

// ---- NodeRunner ----------------------------------------------------------------------------

// ---- the serial tail (training's learning half) ---------------------------------------------

// The tail runs in input order on whole batches of the frames that reached it (a frame dropped
// upstream leaves the next batch to fill from later frames), once per batch, then the batch
// sink; the partial last batch runs at the end, and finish() after it. Upstream nodes still run
// per frame on the flow graph.
TEST(SerialTailTest, RunsWholeBatchesInOrderThenTheBatchSinkThenFinish) {
  RunOptions o = options(8, 2, /*batch=*/4);
  o.tail_from = {"net"};
  Executor ex(graph(R"({"schema": 1, "inputs": {"t": "Tensor"}, "outputs": {"u": "Tensor"}, "nodes": [
      {"id": "drop", "type": "TestTensorDrop", "in": {"t": "t"}, "out": {"t": "kept"}, "params": {"at": 5}},
      {"id": "net", "type": "TestBatch", "in": {"t": "kept"}, "out": {"u": "u"}}]})"),
              o);
  EXPECT_EQ(ex.in_tail(), (std::vector<bool>{false, true}));
  std::vector<std::vector<long long>> batches;
  std::vector<at::Tensor> outputs;
  long long sunk = 0;
  ex.run(
      tensor_source(10), [&](const Frame&) { ++sunk; }, false,
      [&](Frame& batch, const std::vector<const Frame*>& frames) {
        std::vector<long long> ids;
        for (const Frame* f : frames) ids.push_back(f->id());
        batches.push_back(ids);
        outputs.push_back(batch.get<Tensor>("u").t);
      });
  EXPECT_EQ(sunk, 10) << "every frame still reaches the sink";
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0], (std::vector<long long>{0, 1, 2, 3}));
  EXPECT_EQ(batches[1], (std::vector<long long>{4, 6, 7, 8})) << "frame 5 was dropped upstream";
  EXPECT_EQ(batches[2], (std::vector<long long>{9}));
  const auto& net = node_as<TestBatchNode>(ex, "net");
  ASSERT_EQ(net.calls.size(), 3u);
  EXPECT_EQ(net.calls[1].values, (std::vector<float>{4, 6, 7, 8}));
  EXPECT_EQ(net.calls[2].batch_size, 1);
  EXPECT_EQ(outputs[1].size(0), 4) << "the batch frame holds the stacked outputs";
  EXPECT_TRUE(at::equal(outputs[1][1], at::full({2, 3, 3}, 61.0f)));
  EXPECT_EQ(net.finishes, 1);
  EXPECT_EQ(net.calls_at_finish, 3u) << "finish() after the partial last batch";
}

// RunOptions::without_autograd: the named node's process() runs with grad mode off (on the thread
// that runs it), the nodes after it with grad mode as it was; a name not in the graph is an error.
TEST(SerialTailTest, NodesWithoutAutogradRunWithGradModeOffAndOnlyThey) {
  RunOptions o = options(8, 2, /*batch=*/2);
  o.tail_from = {"first"};
  Executor ex(graph(R"({"schema": 1, "inputs": {"t": "Tensor"}, "outputs": {"v": "Tensor"}, "nodes": [
      {"id": "first", "type": "TestBatch", "in": {"t": "t"}, "out": {"u": "u"}},
      {"id": "second", "type": "TestBatch", "in": {"t": "u"}, "out": {"u": "v"}}]})"),
              o);
  EXPECT_THROW(ex.set_without_autograd({"fist"}), Error);
  auto run = [&] {
    ex.run(
        tensor_source(4), [](const Frame&) {}, false, [](Frame&, const std::vector<const Frame*>&) {});
  };
  run();
  ex.set_without_autograd({"first"});
  run();
  const auto& first = node_as<TestBatchNode>(ex, "first");
  const auto& second = node_as<TestBatchNode>(ex, "second");
  ASSERT_EQ(first.calls.size(), 4u);
  ASSERT_EQ(second.calls.size(), 4u);
  EXPECT_TRUE(first.calls[0].grad_enabled && first.calls[1].grad_enabled)
      << "by default every node runs as the caller's grad mode";
  EXPECT_FALSE(first.calls[2].grad_enabled || first.calls[3].grad_enabled);
  EXPECT_TRUE(second.calls[2].grad_enabled && second.calls[3].grad_enabled) << "grad mode is restored after the node";
  EXPECT_TRUE(c10::GradMode::is_enabled());
}

// A Trainable node on the flow graph (upstream of the tail) of a training run takes one frame at a
// time although its contract says unlimited (autograd and BatchNorm statistics are per node, not
// per frame); outside training the same node runs frames at once.
TEST(SerialTailTest, ATrainingRunGivesTrainableNodesOneFrameAtATime) {
  const std::string g = R"({"schema": 1, "inputs": {"t": "Tensor"}, "outputs": {"u": "Tensor"}, "nodes": [
      {"id": "learn", "type": "TestTrainable", "in": {"t": "t"}, "out": {"t": "t2"}, "params": {"ms": 5}},
      {"id": "net", "type": "TestBatch", "in": {"t": "t2"}, "out": {"u": "u"}}]})";
  for (const bool training : {false, true}) {
    RunOptions o = options(8, 2);
    if (training) o.tail_from = {"net"};
    Executor ex(graph(g), o);
    const Log& log = node_as<TestTrainableNode>(ex, "learn").log;
    long long k = 0;
    ex.run(
        [&](Frame& f) {
          if (k >= 300 || (k >= 40 && log.max_running.load() >= 2)) return false;
          f.set("t", Packet::make(Tensor{at::full({1, 1, 1, 1}, float(k++))}));
          return true;
        },
        [](const Frame&) {}, false, [](Frame&, const std::vector<const Frame*>&) {});
    if (training) {
      EXPECT_EQ(log.max_running.load(), 1) << "over " << k << " frames";
      EXPECT_EQ(log.started, log.completed) << "in input order";
    } else {
      EXPECT_GE(log.max_running.load(), 2) << "over " << k << " frames";
    }
  }
}

TEST(SerialTailTest, AStreamThatCannotStackIntoTheTailIsRefusedAtConstruction) {
  RunOptions o = options(8, 2, /*batch=*/2);
  o.tail_from = {"sum"};
  try {
    Executor ex(graph(R"({"schema": 1, "inputs": {"x": "Scalar"}, "outputs": {"z": "Scalar"}, "nodes": [
      {"id": "make", "type": "TestBlobMake", "in": {"x": "x"}, "out": {"blob": "b"}, "params": {"bytes": 8}},
      {"id": "sum", "type": "TestBlobSum", "in": {"blob": "b"}, "out": {"sum": "z"}}]})"),
                o);
    FAIL() << "a TestBlob cannot be stacked into a batch";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("stream \"b\" (TestBlob) enters the training tail but cannot be batched"));
  }
  o.tail_from = {"nope"};
  try {
    Executor ex(graph(R"({"schema": 1, "inputs": {"t": "Tensor"}, "outputs": {"u": "Tensor"}, "nodes": [
      {"id": "net", "type": "TestBatch", "in": {"t": "t"}, "out": {"u": "u"}}]})"),
                o);
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("test.json: no node \"nope\" to start the training tail at"));
  }
}

TEST(NodeRunnerTest, MultiInputNodePushRunPop) {
  register_test_nodes();
  NodeRunner runner(R"({"id": "join", "type": "TestJoin"})");
  for (int k = 0; k < 3; ++k) {
    runner.push(TestJoinNode::kA, Scalar{double(k)});
    runner.push(TestJoinNode::kB, Scalar{10.0 * k});
  }
  const RunStats s = runner.run();
  EXPECT_EQ(s.frames, 3);
  EXPECT_EQ(runner.available("sum"), 3u);
  for (int k = 0; k < 3; ++k) EXPECT_DOUBLE_EQ(runner.pop(TestJoinNode::kSum).value, 11.0 * k);
  EXPECT_EQ(runner.available("sum"), 0u);
  EXPECT_THAT([&] { runner.pop(TestJoinNode::kSum); },
              testing::ThrowsMessage<Error>(HasSubstr(R"(NodeRunner: no more packets on output "sum")")));
  EXPECT_EQ(dynamic_cast<TestJoinNode&>(runner.node()).seen.size(), 3u);
  EXPECT_TRUE(runner.dropped().empty());
}

TEST(NodeRunnerTest, UnknownTypeOrBadJsonIsAGraphError) {
  register_test_nodes();  // ctest runs each test in its own process
  EXPECT_THAT([] { NodeRunner r(R"({"id": "j", "type": "TestJion"})"); },
              testing::ThrowsMessage<GraphError>(
                  HasSubstr(R"(NodeRunner: nodes[0]: unknown type "TestJion"; did you mean "TestJoin"?)")));
  EXPECT_THAT([] { NodeRunner r(R"({"id": "j", )"); },
              testing::ThrowsMessage<GraphError>(HasSubstr("NodeRunner: node snippet is not valid JSON")));
}

// A snippet whose stream name is not a string is a config error like any other.
TEST(NodeRunnerTest, NonStringStreamNameIsAGraphError) {
  register_test_nodes();
  EXPECT_THAT([] { NodeRunner r(R"({"id": "j", "type": "TestJoin", "in": {"a": 5, "b": "b"}})"); },
              testing::ThrowsMessage<GraphError>(HasSubstr(R"(in "a" must be a string, got 5)")));
}

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("fmam_executor_test") {}
};

// One bad image in a folder is reported (naming the file) and skipped; the others decode.
TEST(NodeRunnerTest, ImageSourceDropsACorruptFileAndDecodesTheRest) {
  TempDir dir;
  for (int i = 0; i < 3; ++i) {
    cv::Mat m(10 + i, 20 + i, CV_8UC3, cv::Scalar(i * 40, 1, 2));
    ASSERT_TRUE(cv::imwrite((dir.path / ("img_" + std::to_string(i) + ".png")).string(), m));
  }
  const std::string bad = (dir.path / "img_1b.png").string();
  {
    std::ofstream f(bad, std::ios::binary);
    f << "this is not a PNG at all \x01\x02\x03";
  }
  const std::vector<std::string> files = list_images(dir.path.string());
  ASSERT_EQ(files.size(), 4u);
  NodeRunner runner(R"({"id": "src", "type": "ImageSource"})");
  for (const auto& f : files) runner.push_source(f);
  const RunStats s = runner.run();
  EXPECT_EQ(s.frames, 4);
  EXPECT_EQ(s.dropped, 1);
  ASSERT_EQ(runner.dropped().size(), 1u);
  EXPECT_THAT(runner.dropped()[0], HasSubstr(R"(NodeRunner: node "src" (ImageSource): ")" + bad + R"(": cannot decode)"));
  ASSERT_EQ(runner.available("image"), 3u);
  for (int i = 0; i < 3; ++i) {
    const cv::Mat m = runner.pop(ImageSourceNode::kOut).mat;
    EXPECT_EQ(m.rows, 10 + i);
    EXPECT_EQ(m.cols, 20 + i);
    EXPECT_EQ(m.channels(), 3);
    EXPECT_EQ(m.at<cv::Vec3b>(0, 0)[0], i * 40);
  }
}

}  // namespace
}  // namespace fmam
