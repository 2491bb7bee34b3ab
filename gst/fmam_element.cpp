// The `fmam` element: scores every video frame with an fmam graph and model and passes the
// frame on unchanged, with a GstFmamMeta (score, verdict, anomaly map) and an `fmam-result`
// element message. Frames go through fmam::Pipeline's stream, so they are batched and
// pipelined: the chain function pushes a copy of the frame and returns; the result callback,
// called in order on a worker thread, pushes the buffer downstream. Because that push happens
// on another thread, every serialized event first closes the stream (all buffers out), then is
// forwarded: downstream never sees an event overtake a buffer.
#include "gst/fmam_element.h"

#include <gst/video/video.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>

#include <opencv2/imgproc.hpp>

#include "fmam/pipeline.h"
#include "gst/fmam_meta.h"

GST_DEBUG_CATEGORY_STATIC(gst_fmam_debug);
#define GST_CAT_DEFAULT gst_fmam_debug

namespace {

// What the element needs beyond GObject fields; C++ members, so allocated with new.
struct State {
  std::mutex stream_mutex;  // open/push/close of the stream (streaming thread vs. state changes)
  std::unique_ptr<fmam::Pipeline> pipeline;
  GstVideoInfo info;
  bool have_info = false;
  std::atomic<GstFlowReturn> flow{GST_FLOW_OK};  // the first non-OK downstream return, for the next chain
  std::atomic<bool> flushing{false};
  guint64 next_frame = 0;
};

// A frame in flight: the buffer ref travels with it through the pipeline as Detection::user.
struct InFlight {
  GstBuffer* buffer;
  guint64 frame;
  ~InFlight() {
    if (buffer) gst_buffer_unref(buffer);  // dropped (stream closed by an error)
  }
};

}  // namespace

struct _GstFmam {
  GstElement parent;
  GstPad* sinkpad;
  GstPad* srcpad;
  gchar* graph;  // properties, under the object lock
  gchar* model;
  gchar* overrides;
  gdouble threshold;
  gint batch;
  gint threads;
  gchar* precision;
  State* st;
};

G_DEFINE_TYPE(GstFmam, gst_fmam, GST_TYPE_ELEMENT)

enum { PROP_0, PROP_GRAPH, PROP_MODEL, PROP_THRESHOLD, PROP_BATCH, PROP_THREADS, PROP_OVERRIDES, PROP_PRECISION };

#define FMAM_CAPS GST_VIDEO_CAPS_MAKE("{ BGR, RGB, GRAY8 }")
static GstStaticPadTemplate sink_template =
    GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS(FMAM_CAPS));
static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS(FMAM_CAPS));

namespace {

// "a.b=1; c.d=2" -> {"a.b=1", "c.d=2"}: the property holds what fmam run takes as --set.
std::vector<std::string> split_overrides(const char* s) {
  std::vector<std::string> out;
  std::stringstream ss(s ? s : "");
  std::string item;
  while (std::getline(ss, item, ';')) {
    const auto b = item.find_first_not_of(" \t\n"), e = item.find_last_not_of(" \t\n");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

// Loads graph and model once per NULL->READY; the error text names the file and field.
bool build_pipeline(GstFmam* self) {
  fmam::PipelineOptions o;
  std::string graph;
  GST_OBJECT_LOCK(self);
  graph = self->graph ? self->graph : "";
  o.model = self->model ? self->model : "";
  o.overrides = split_overrides(self->overrides);
  o.threshold = self->threshold;
  o.batch = self->batch;
  o.threads = self->threads;
  if (self->precision) o.precision = self->precision;
  GST_OBJECT_UNLOCK(self);
  o.images = false;  // map and score only; fmamoverlay draws
  if (graph.empty()) {
    GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND, ("fmam: the \"graph\" property is not set (a graph JSON file)"), (nullptr));
    return false;
  }
  try {
    self->st->pipeline = std::make_unique<fmam::Pipeline>(graph, o);
  } catch (const std::exception& e) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("fmam: %s", e.what()),
                      ("graph=%s model=%s", graph.c_str(), o.model.empty() ? "(none)" : o.model.c_str()));
    return false;
  }
  GST_INFO_OBJECT(self, "graph %s, model %s, threshold %g", graph.c_str(), o.model.c_str(), self->st->pipeline->threshold());
  return true;
}

// Delivers every result still in flight (in order) and ends the stream; it reopens at the next
// buffer. Called before every serialized event and on the way down to READY.
bool close_stream(GstFmam* self) {
  State& st = *self->st;
  std::lock_guard<std::mutex> lock(st.stream_mutex);
  if (!st.pipeline || !st.pipeline->stream_open()) return true;
  try {
    st.pipeline->close_stream();
  } catch (const std::exception& e) {
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("fmam: %s", e.what()), (nullptr));
    return false;
  }
  return true;
}

// The result callback (a worker thread, in frame order): meta, bus message, push downstream.
void deliver(GstFmam* self, const fmam::Detection& d) {
  State& st = *self->st;
  auto item = std::static_pointer_cast<InFlight>(d.user);
  GstBuffer* buf = item ? std::exchange(item->buffer, nullptr) : nullptr;
  if (!buf) return;
  if (d.skipped) {
    GST_ELEMENT_WARNING(self, STREAM, FAILED, ("fmam: frame %" G_GUINT64_FORMAT " not scored: %s", item->frame, d.error.c_str()),
                        (nullptr));
  } else {
    buf = gst_buffer_make_writable(buf);
    const cv::Mat map = d.map.empty() || d.map.isContinuous() ? d.map : d.map.clone();
    const char* verdict = fmam::verdict_name(d.verdict);
    GstFmamMeta* meta =
        gst_fmam_meta_add(buf, d.score, verdict, item->frame, map.empty() ? nullptr : map.ptr<float>(), map.cols, map.rows);
    double lo = 0, hi = 0;
    if (meta && st.pipeline && st.pipeline->map_range(&lo, &hi)) {
      meta->has_range = TRUE;
      meta->map_lo = lo;
      meta->map_hi = hi;
    }
    GstStructure* s = gst_structure_new("fmam-result", "pts", G_TYPE_UINT64, guint64(GST_BUFFER_PTS(buf)), "frame", G_TYPE_UINT64,
                                        item->frame, "score", G_TYPE_DOUBLE, d.score, "verdict", G_TYPE_STRING, verdict, nullptr);
    gst_element_post_message(GST_ELEMENT(self), gst_message_new_element(GST_OBJECT(self), s));
  }
  if (st.flushing) {
    gst_buffer_unref(buf);
    return;
  }
  const GstFlowReturn ret = gst_pad_push(self->srcpad, buf);
  GstFlowReturn ok = GST_FLOW_OK;
  if (ret != GST_FLOW_OK) st.flow.compare_exchange_strong(ok, ret);
}

// A copy of the frame as 8-bit BGR or gray (the row stride of the buffer honoured).
bool frame_to_mat(const GstVideoInfo& info, GstBuffer* buf, cv::Mat& out) {
  GstVideoFrame frame;
  if (!gst_video_frame_map(&frame, const_cast<GstVideoInfo*>(&info), buf, GST_MAP_READ)) return false;
  const GstVideoFormat fmt = GST_VIDEO_FRAME_FORMAT(&frame);
  const cv::Mat view(GST_VIDEO_FRAME_HEIGHT(&frame), GST_VIDEO_FRAME_WIDTH(&frame),
                     fmt == GST_VIDEO_FORMAT_GRAY8 ? CV_8UC1 : CV_8UC3, GST_VIDEO_FRAME_PLANE_DATA(&frame, 0),
                     GST_VIDEO_FRAME_PLANE_STRIDE(&frame, 0));
  if (fmt == GST_VIDEO_FORMAT_RGB)
    cv::cvtColor(view, out, cv::COLOR_RGB2BGR);
  else
    out = view.clone();
  gst_video_frame_unmap(&frame);
  return true;
}

GstFlowReturn gst_fmam_chain(GstPad*, GstObject* parent, GstBuffer* buf) {
  GstFmam* self = GST_FMAM(parent);
  State& st = *self->st;
  const GstFlowReturn prev = st.flow.load();
  if (prev != GST_FLOW_OK) {  // downstream refused an earlier frame (EOS, not linked, flushing)
    gst_buffer_unref(buf);
    return prev;
  }
  cv::Mat mat;
  if (!st.have_info || !frame_to_mat(st.info, buf, mat)) {
    gst_buffer_unref(buf);
    GST_ELEMENT_ERROR(self, STREAM, FORMAT, ("fmam: cannot map the frame as the negotiated video format"), (nullptr));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  std::shared_ptr<InFlight> item(new InFlight{buf, st.next_frame++});
  try {
    std::lock_guard<std::mutex> lock(st.stream_mutex);
    if (!st.pipeline) throw std::runtime_error("no pipeline (the element is not READY)");
    if (!st.pipeline->stream_open()) st.pipeline->open_stream([self](const fmam::Detection& d) { deliver(self, d); });
    st.pipeline->push(mat, "", std::move(item));
  } catch (const std::exception& e) {
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("fmam: %s", e.what()), (nullptr));
    return GST_FLOW_ERROR;
  }
  return st.flow.load();
}

gboolean gst_fmam_sink_event(GstPad* pad, GstObject* parent, GstEvent* event) {
  GstFmam* self = GST_FMAM(parent);
  State& st = *self->st;
  switch (GST_EVENT_TYPE(event)) {
    case GST_EVENT_FLUSH_START:  // not serialized: the worker drops results until FLUSH_STOP
      st.flushing = true;
      return gst_pad_event_default(pad, parent, event);
    case GST_EVENT_FLUSH_STOP:
      close_stream(self);
      st.flow = GST_FLOW_OK;
      st.flushing = false;
      return gst_pad_event_default(pad, parent, event);
    case GST_EVENT_CAPS: {
      close_stream(self);  // frames of the old format go out first
      GstCaps* caps;
      gst_event_parse_caps(event, &caps);
      st.have_info = gst_video_info_from_caps(&st.info, caps);
      if (!st.have_info) {
        GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("fmam: unsupported caps"), ("%" GST_PTR_FORMAT, caps));
        gst_event_unref(event);
        return FALSE;
      }
      return gst_pad_event_default(pad, parent, event);
    }
    default:
      if (GST_EVENT_IS_SERIALIZED(event)) close_stream(self);  // EOS, segment, tags, gap...
      return gst_pad_event_default(pad, parent, event);
  }
}

GstStateChangeReturn gst_fmam_change_state(GstElement* element, GstStateChange transition) {
  GstFmam* self = GST_FMAM(element);
  State& st = *self->st;
  if (transition == GST_STATE_CHANGE_NULL_TO_READY && !build_pipeline(self)) return GST_STATE_CHANGE_FAILURE;
  if (transition == GST_STATE_CHANGE_READY_TO_PAUSED) {
    st.flow = GST_FLOW_OK;
    st.flushing = false;
    st.next_frame = 0;
  }
  // Going down, the parent deactivates the pads first: the chain function returns and pushes
  // from the worker fail fast (flushing), so closing the stream afterwards cannot block.
  const GstStateChangeReturn ret = GST_ELEMENT_CLASS(gst_fmam_parent_class)->change_state(element, transition);
  if (ret == GST_STATE_CHANGE_FAILURE) return ret;
  if (transition == GST_STATE_CHANGE_PAUSED_TO_READY) {
    st.flushing = true;
    close_stream(self);
    st.have_info = false;
    st.flow = GST_FLOW_OK;
  }
  if (transition == GST_STATE_CHANGE_READY_TO_NULL) {
    close_stream(self);
    std::lock_guard<std::mutex> lock(st.stream_mutex);
    st.pipeline.reset();  // the next NULL->READY reads the properties again
  }
  return ret;
}

void gst_fmam_set_property(GObject* object, guint id, const GValue* value, GParamSpec* pspec) {
  GstFmam* self = GST_FMAM(object);
  GST_OBJECT_LOCK(self);
  switch (id) {
    case PROP_GRAPH:
      g_free(self->graph);
      self->graph = g_value_dup_string(value);
      break;
    case PROP_MODEL:
      g_free(self->model);
      self->model = g_value_dup_string(value);
      break;
    case PROP_OVERRIDES:
      g_free(self->overrides);
      self->overrides = g_value_dup_string(value);
      break;
    case PROP_THRESHOLD: self->threshold = g_value_get_double(value); break;
    case PROP_BATCH: self->batch = g_value_get_int(value); break;
    case PROP_THREADS: self->threads = g_value_get_int(value); break;
    case PROP_PRECISION:
      g_free(self->precision);
      self->precision = g_value_dup_string(value);
      break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  }
  GST_OBJECT_UNLOCK(self);
}

void gst_fmam_get_property(GObject* object, guint id, GValue* value, GParamSpec* pspec) {
  GstFmam* self = GST_FMAM(object);
  GST_OBJECT_LOCK(self);
  switch (id) {
    case PROP_GRAPH: g_value_set_string(value, self->graph); break;
    case PROP_MODEL: g_value_set_string(value, self->model); break;
    case PROP_OVERRIDES: g_value_set_string(value, self->overrides); break;
    case PROP_THRESHOLD: g_value_set_double(value, self->threshold); break;
    case PROP_BATCH: g_value_set_int(value, self->batch); break;
    case PROP_THREADS: g_value_set_int(value, self->threads); break;
    case PROP_PRECISION: g_value_set_string(value, self->precision); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  }
  GST_OBJECT_UNLOCK(self);
}

void gst_fmam_finalize(GObject* object) {
  GstFmam* self = GST_FMAM(object);
  delete self->st;
  g_free(self->graph);
  g_free(self->model);
  g_free(self->overrides);
  g_free(self->precision);
  G_OBJECT_CLASS(gst_fmam_parent_class)->finalize(object);
}

}  // namespace

static void gst_fmam_class_init(GstFmamClass* klass) {
  GObjectClass* oc = G_OBJECT_CLASS(klass);
  GstElementClass* ec = GST_ELEMENT_CLASS(klass);
  oc->set_property = gst_fmam_set_property;
  oc->get_property = gst_fmam_get_property;
  oc->finalize = gst_fmam_finalize;
  const auto flags = GParamFlags(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY);
  g_object_class_install_property(
      oc, PROP_GRAPH,
      g_param_spec_string("graph", "Graph",
                          "Inspection graph JSON file, e.g. graphs/rkd.json (read when the element goes to READY)", nullptr,
                          flags));
  g_object_class_install_property(
      oc, PROP_MODEL,
      g_param_spec_string("model", "Model",
                          "Trained model file from `fmam train` (weights, image size, calibrated threshold); "
                          "empty runs untrained weights",
                          nullptr, flags));
  g_object_class_install_property(
      oc, PROP_THRESHOLD,
      g_param_spec_double("threshold", "Threshold",
                          "Score at or above which a frame FAILs; -1 uses the model's calibrated threshold "
                          "(verdict \"none\" if it has none)",
                          -1, G_MAXDOUBLE, -1, flags));
  g_object_class_install_property(
      oc, PROP_BATCH,
      g_param_spec_int("batch", "Batch", "Frames stacked per network call (1: lowest latency; 4: ~25% more throughput)", 1, 256,
                       4, flags));
  g_object_class_install_property(
      oc, PROP_THREADS, g_param_spec_int("threads", "Threads", "Graph worker threads (0: one per core)", 0, 1024, 0, flags));
  g_object_class_install_property(
      oc, PROP_PRECISION,
      g_param_spec_string("precision", "Precision",
                          "The networks' arithmetic: auto (int8 for a model calibrated for it on CPUs with AVX2 or VNNI, else "
                          "bf16 on CPUs with AVX512-BF16, else fp32), fp32, bf16 (convolutions in bfloat16, about 2x "
                          "faster) or int8 (the teacher in int8; the model must be calibrated: fmam quantize)",
                          "auto", flags));
  g_object_class_install_property(oc, PROP_OVERRIDES,
                                  g_param_spec_string("overrides", "Overrides",
                                                      "Node parameter overrides as fmam run --set takes them, separated by ';', "
                                                      "e.g. \"blur.sigma=2;score.k=50\"",
                                                      nullptr, flags));
  gst_element_class_set_static_metadata(
      ec, "fmam anomaly detector", "Filter/Analyzer/Video",
      "Scores each frame with an fmam graph and model; attaches GstFmamMeta (score, verdict, anomaly map) "
      "and posts an fmam-result element message; frames pass unchanged",
      "fmam");
  gst_element_class_add_static_pad_template(ec, &sink_template);
  gst_element_class_add_static_pad_template(ec, &src_template);
  ec->change_state = gst_fmam_change_state;
  GST_DEBUG_CATEGORY_INIT(gst_fmam_debug, "fmam", 0, "fmam anomaly detector");
}

static void gst_fmam_init(GstFmam* self) {
  self->st = new State;
  self->threshold = -1;
  self->batch = 4;
  self->threads = 0;
  self->precision = g_strdup("auto");
  self->sinkpad = gst_pad_new_from_static_template(&sink_template, "sink");
  gst_pad_set_chain_function(self->sinkpad, gst_fmam_chain);
  gst_pad_set_event_function(self->sinkpad, gst_fmam_sink_event);
  GST_PAD_SET_PROXY_CAPS(self->sinkpad);
  GST_PAD_SET_PROXY_ALLOCATION(self->sinkpad);
  gst_element_add_pad(GST_ELEMENT(self), self->sinkpad);
  self->srcpad = gst_pad_new_from_static_template(&src_template, "src");
  GST_PAD_SET_PROXY_CAPS(self->srcpad);
  gst_element_add_pad(GST_ELEMENT(self), self->srcpad);
}
