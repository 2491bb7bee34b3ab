// libgstfmam.so: the GStreamer face of fmam. Elements: fmam (scores frames), fmamoverlay (draws).
#include <gst/gst.h>

#include "gst/fmam_element.h"
#include "gst/fmam_meta.h"
#include "gst/fmam_overlay.h"

#define PACKAGE "fmam"  // GST_PLUGIN_DEFINE expects it from an autotools config.h

static gboolean plugin_init(GstPlugin* plugin) {
  gst_fmam_meta_get_info();  // registered up front so applications can look the API type up
  return gst_element_register(plugin, "fmam", GST_RANK_NONE, GST_TYPE_FMAM) &&
         gst_element_register(plugin, "fmamoverlay", GST_RANK_NONE, GST_TYPE_FMAM_OVERLAY);
}

GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, fmam,
                  "fmam defect detection: score video frames with a teacher-student graph, draw anomaly maps", plugin_init, "0.1",
                  "Proprietary", "fmam", "https://github.com/fmam/fmam")
