// The `fmamoverlay` element (see fmam_overlay.cpp).
#pragma once

#include <gst/video/gstvideofilter.h>

G_BEGIN_DECLS
#define GST_TYPE_FMAM_OVERLAY (gst_fmam_overlay_get_type())
G_DECLARE_FINAL_TYPE(GstFmamOverlay, gst_fmam_overlay, GST, FMAM_OVERLAY, GstVideoFilter)
G_END_DECLS
