// The `fmam` element (see fmam_element.cpp).
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS
#define GST_TYPE_FMAM (gst_fmam_get_type())
G_DECLARE_FINAL_TYPE(GstFmam, gst_fmam, GST, FMAM, GstElement)
G_END_DECLS
