#include "gst/fmam_meta.h"

#include <cstring>

namespace {

gboolean meta_init(GstMeta* meta, gpointer, GstBuffer*) {
  auto* m = reinterpret_cast<GstFmamMeta*>(meta);
  m->score = 0;
  m->verdict = "none";
  m->frame = 0;
  m->map_width = m->map_height = 0;
  m->map = nullptr;
  m->has_range = FALSE;
  m->map_lo = m->map_hi = 0;
  return TRUE;
}

void meta_free(GstMeta* meta, GstBuffer*) {
  auto* m = reinterpret_cast<GstFmamMeta*>(meta);
  g_free(m->map);
  m->map = nullptr;
}

// Copies on every transform (copy, scale, convert): the map is relative to the frame, so a
// resized or converted frame still has the same result.
gboolean meta_transform(GstBuffer* dest, GstMeta* meta, GstBuffer*, GQuark, gpointer) {
  auto* m = reinterpret_cast<GstFmamMeta*>(meta);
  GstFmamMeta* d = gst_fmam_meta_add(dest, m->score, m->verdict, m->frame, m->map, m->map_width, m->map_height);
  if (!d) return FALSE;
  d->has_range = m->has_range;
  d->map_lo = m->map_lo;
  d->map_hi = m->map_hi;
  return TRUE;
}

}  // namespace

GType gst_fmam_meta_api_get_type(void) {
  static GType type = 0;
  static const gchar* tags[] = {nullptr};  // no tags: kept by converters and scalers
  if (g_once_init_enter(&type)) {
    GType t = gst_meta_api_type_register("GstFmamMetaAPI", tags);
    g_once_init_leave(&type, t);
  }
  return type;
}

const GstMetaInfo* gst_fmam_meta_get_info(void) {
  static const GstMetaInfo* info = nullptr;
  if (g_once_init_enter(&info)) {
    const GstMetaInfo* i =
        gst_meta_register(GST_FMAM_META_API_TYPE, "GstFmamMeta", sizeof(GstFmamMeta), meta_init, meta_free, meta_transform);
    g_once_init_leave(&info, i);
  }
  return info;
}

GstFmamMeta* gst_fmam_meta_add(GstBuffer* buffer, gdouble score, const gchar* verdict, guint64 frame, const gfloat* map,
                               gint map_width, gint map_height) {
  auto* m = reinterpret_cast<GstFmamMeta*>(gst_buffer_add_meta(buffer, gst_fmam_meta_get_info(), nullptr));
  if (!m) return nullptr;
  m->score = score;
  m->verdict = verdict;
  m->frame = frame;
  if (map && map_width > 0 && map_height > 0) {
    const size_t bytes = size_t(map_width) * map_height * sizeof(gfloat);
    m->map = static_cast<gfloat*>(g_malloc(bytes));
    std::memcpy(m->map, map, bytes);
    m->map_width = map_width;
    m->map_height = map_height;
  }
  return m;
}
