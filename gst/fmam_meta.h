// GstFmamMeta: one frame's fmam result, attached by the `fmam` element to the buffer it scored.
// Downstream elements (fmamoverlay, an application's pad probe or appsink) read it with
// gst_fmam_meta_get(buffer). The map is the raw anomaly map at the model's resolution (not the
// frame's): it stays valid through videoscale/videoconvert, which is why the meta has no tags.
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

typedef struct {
  GstMeta meta;
  gdouble score;         // the graph's score (its first Scalar output)
  const gchar* verdict;  // "PASS", "FAIL" or "none" (static strings, never freed)
  guint64 frame;         // index of the frame in the stream since the element went to PAUSED
  gint map_width;        // the anomaly map, row-major float32, map_width * map_height values;
  gint map_height;       // 0 x 0 (map NULL) if the graph has no Map2D output
  gfloat* map;           // owned by the meta (g_free)
  gboolean has_range;    // the model's calibrated heatmap range (fmam eval --calibrate): map values
  gdouble map_lo;        // drawn coldest and hottest; fmamoverlay uses it unless its lo/hi are set
  gdouble map_hi;
} GstFmamMeta;

GType gst_fmam_meta_api_get_type(void);
const GstMetaInfo* gst_fmam_meta_get_info(void);
#define GST_FMAM_META_API_TYPE (gst_fmam_meta_api_get_type())
#define gst_fmam_meta_get(buf) ((GstFmamMeta*)gst_buffer_get_meta((buf), GST_FMAM_META_API_TYPE))

// Adds a meta to a writable buffer; `map` (may be NULL) is copied.
GstFmamMeta* gst_fmam_meta_add(GstBuffer* buffer, gdouble score, const gchar* verdict, guint64 frame, const gfloat* map,
                               gint map_width, gint map_height);

G_END_DECLS
