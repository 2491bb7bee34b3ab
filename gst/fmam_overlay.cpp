// The `fmamoverlay` element: draws the anomaly map of a frame's GstFmamMeta over the frame, in
// place, as the graph's Overlay node does: the map resized up to the frame (not the frame down),
// coloured by a FIXED range [lo, hi] (a per-frame min-max would paint every good part red), the
// heatmap's opacity growing from 0 at lo to `alpha` at hi. Frames without the meta pass unchanged.
#include "gst/fmam_overlay.h"

#include <gst/video/video.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include <opencv2/imgproc.hpp>

#include "gst/fmam_meta.h"
#include "nodes/heatmap.h"

struct _GstFmamOverlay {
  GstVideoFilter parent;
  gdouble lo, hi, alpha;  // properties, under the object lock
  bool lo_set, hi_set;    // lo / hi given by the user (else the model's range from the meta)
  gboolean show_score;
};

G_DEFINE_TYPE(GstFmamOverlay, gst_fmam_overlay, GST_TYPE_VIDEO_FILTER)

enum { PROP_0, PROP_LO, PROP_HI, PROP_ALPHA, PROP_SHOW_SCORE };

#define OVERLAY_CAPS GST_VIDEO_CAPS_MAKE("{ BGR, RGB }")

namespace {

// The map at the frame's size as weights in [0, 1]: (v - lo) / (hi - lo), clamped.
cv::Mat normalized_map(const GstFmamMeta& meta, cv::Size size, double lo, double hi) {
  const cv::Mat map(meta.map_height, meta.map_width, CV_32F, meta.map);
  cv::Mat resized;
  cv::resize(map, resized, size, 0, 0, cv::INTER_LINEAR);
  const double span = hi > lo ? hi - lo : 1e-6;
  resized.convertTo(resized, CV_32F, 1.0 / span, -lo / span);
  cv::min(cv::max(resized, 0.0), 1.0, resized);
  return resized;
}

void draw(cv::Mat& img, bool rgb, const GstFmamMeta& meta, double lo, double hi, double alpha, bool show_score) {
  if (meta.map && meta.map_width > 0 && meta.map_height > 0) {
    const cv::Mat w = normalized_map(meta, img.size(), lo, hi);
    cv::Mat heat = fmam::heatmap_bgr(w, 0.0f, 1.0f);  // w is already (v - lo) / (hi - lo)
    if (rgb) cv::cvtColor(heat, heat, cv::COLOR_BGR2RGB);
    const cv::Mat w_heat = w * alpha;
    const cv::Mat w_img = 1.0 - w_heat;
    cv::Mat out;
    cv::blendLinear(img, heat, w_img, w_heat, out);
    out.copyTo(img);  // img wraps the buffer (its stride); blendLinear writes a fresh Mat
  }
  if (show_score) {
    char text[64];
    std::snprintf(text, sizeof text, "%.4f %s", meta.score, meta.verdict ? meta.verdict : "");
    const bool fail = meta.verdict && std::string(meta.verdict) == "FAIL";
    const cv::Scalar red = rgb ? cv::Scalar(255, 0, 0) : cv::Scalar(0, 0, 255);
    const double scale = std::max(0.4, img.cols / 640.0);
    cv::putText(img, text, {8, int(24 * scale)}, cv::FONT_HERSHEY_SIMPLEX, scale, fail ? red : cv::Scalar(255, 255, 255),
                std::max(1, int(2 * scale)), cv::LINE_AA);
  }
}

GstFlowReturn gst_fmam_overlay_transform_frame_ip(GstVideoFilter* filter, GstVideoFrame* frame) {
  GstFmamOverlay* self = GST_FMAM_OVERLAY(filter);
  const GstFmamMeta* meta = gst_fmam_meta_get(frame->buffer);
  if (!meta) return GST_FLOW_OK;
  GST_OBJECT_LOCK(self);
  double lo = self->lo, hi = self->hi;
  const bool lo_set = self->lo_set, hi_set = self->hi_set;
  const double alpha = self->alpha;
  const bool show = self->show_score;
  GST_OBJECT_UNLOCK(self);
  // Not set by the user: the model's calibrated range, which the fmam element put in the meta.
  if (!lo_set && meta->has_range) lo = meta->map_lo;
  if (!hi_set && meta->has_range) hi = meta->map_hi;
  cv::Mat img(GST_VIDEO_FRAME_HEIGHT(frame), GST_VIDEO_FRAME_WIDTH(frame), CV_8UC3, GST_VIDEO_FRAME_PLANE_DATA(frame, 0),
              GST_VIDEO_FRAME_PLANE_STRIDE(frame, 0));
  draw(img, GST_VIDEO_FRAME_FORMAT(frame) == GST_VIDEO_FORMAT_RGB, *meta, lo, hi, alpha, show);
  return GST_FLOW_OK;
}

void gst_fmam_overlay_set_property(GObject* object, guint id, const GValue* value, GParamSpec* pspec) {
  GstFmamOverlay* self = GST_FMAM_OVERLAY(object);
  GST_OBJECT_LOCK(self);
  switch (id) {
    case PROP_LO:
      self->lo = g_value_get_double(value);
      self->lo_set = true;
      break;
    case PROP_HI:
      self->hi = g_value_get_double(value);
      self->hi_set = true;
      break;
    case PROP_ALPHA: self->alpha = g_value_get_double(value); break;
    case PROP_SHOW_SCORE: self->show_score = g_value_get_boolean(value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  }
  GST_OBJECT_UNLOCK(self);
}

void gst_fmam_overlay_get_property(GObject* object, guint id, GValue* value, GParamSpec* pspec) {
  GstFmamOverlay* self = GST_FMAM_OVERLAY(object);
  GST_OBJECT_LOCK(self);
  switch (id) {
    case PROP_LO: g_value_set_double(value, self->lo); break;
    case PROP_HI: g_value_set_double(value, self->hi); break;
    case PROP_ALPHA: g_value_set_double(value, self->alpha); break;
    case PROP_SHOW_SCORE: g_value_set_boolean(value, self->show_score); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  }
  GST_OBJECT_UNLOCK(self);
}

}  // namespace

static void gst_fmam_overlay_class_init(GstFmamOverlayClass* klass) {
  GObjectClass* oc = G_OBJECT_CLASS(klass);
  GstElementClass* ec = GST_ELEMENT_CLASS(klass);
  oc->set_property = gst_fmam_overlay_set_property;
  oc->get_property = gst_fmam_overlay_get_property;
  const auto flags = GParamFlags(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_CONTROLLABLE);
  g_object_class_install_property(
      oc, PROP_LO,
      g_param_spec_double(
          "lo", "Low",
          "Map value drawn coldest and fully transparent; unset: the model's calibrated range from the fmam element's "
          "meta (fmam eval --calibrate), else 0",
          -G_MAXDOUBLE, G_MAXDOUBLE, 0.0, flags));
  g_object_class_install_property(
      oc, PROP_HI,
      g_param_spec_double("hi", "High", "Map value drawn hottest, at opacity alpha; unset: the model's calibrated range, else 1",
                          -G_MAXDOUBLE, G_MAXDOUBLE, 1.0, flags));
  g_object_class_install_property(
      oc, PROP_ALPHA, g_param_spec_double("alpha", "Alpha", "Heatmap opacity at hi (it fades to 0 at lo)", 0.0, 1.0, 0.6, flags));
  g_object_class_install_property(
      oc, PROP_SHOW_SCORE,
      g_param_spec_boolean("show-score", "Show score", "Write the score and verdict in the top-left corner", TRUE, flags));
  gst_element_class_set_static_metadata(
      ec, "fmam anomaly overlay", "Filter/Effect/Video",
      "Draws the anomaly map of the fmam element's GstFmamMeta as a heatmap over the frame (in place)", "fmam");
  GstCaps* caps = gst_caps_from_string(OVERLAY_CAPS);
  gst_element_class_add_pad_template(ec, gst_pad_template_new("sink", GST_PAD_SINK, GST_PAD_ALWAYS, caps));
  gst_element_class_add_pad_template(ec, gst_pad_template_new("src", GST_PAD_SRC, GST_PAD_ALWAYS, caps));
  gst_caps_unref(caps);
  GST_VIDEO_FILTER_CLASS(klass)->transform_frame_ip = gst_fmam_overlay_transform_frame_ip;
}

static void gst_fmam_overlay_init(GstFmamOverlay* self) {
  self->lo = 0.0;
  self->hi = 1.0;
  self->lo_set = self->hi_set = false;
  self->alpha = 0.6;
  self->show_score = TRUE;
}
