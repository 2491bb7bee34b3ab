#include "nodes/anomaly_synth_node.h"

#include <ATen/ops/empty.h>
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <utility>

#include "framework/resource_locator.h"
#include "nodes/perlin.h"

namespace fmam {

namespace fs = std::filesystem;

namespace {

// Noise fields drawn before the threshold is lowered (see the "tau" param). At tau = 0.5 about
// 1 frame in 80 needs a second field (measured over 2000 frames; none needed a third), so 16 is
// not reached in practice; only tau near 1 (|P| <= 1) gets to the fallback.
constexpr int kMaxAttempts = 16;
constexpr double kPi = 3.14159265358979323846;

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// std::mt19937_64 is fully specified by the standard; the std:: distributions are not, so draws
// go through these two helpers and reproduce across standard libraries.
using Rng = std::mt19937_64;
double uniform01(Rng& rng) { return double(rng() >> 11) * 0x1.0p-53; }
// Uniform in [0, n); the modulo bias is below n / 2^64.
uint64_t below(Rng& rng, uint64_t n) { return rng() % n; }

void check_params(const AnomalySynthNode::Params& p) {
  FMAM_CHECK(p.perlin_min_scale < p.perlin_max_scale) << "param \"perlin_max_scale\": must be greater than perlin_min_scale ("
                                                      << p.perlin_min_scale << "), got " << p.perlin_max_scale;
  FMAM_CHECK(p.beta_min <= p.beta_max) << "param \"beta_max\": must be >= beta_min (" << p.beta_min << "), got " << p.beta_max;
  FMAM_CHECK(p.shade_gain_min <= p.shade_gain_max)
      << "param \"shade_gain_max\": must be >= shade_gain_min (" << p.shade_gain_min << "), got " << p.shade_gain_max;
}

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

// M1 = P > tau, M2 = P < -tau, as 0/1 bytes.
void binarise(const cv::Mat& p, double tau, cv::Mat& m1, cv::Mat& m2) {
  cv::compare(p, tau, m1, cv::CMP_GT);
  cv::compare(p, -tau, m2, cv::CMP_LT);
  m1 &= cv::Scalar(1);
  m2 &= cv::Scalar(1);
}

// out = (1 - beta) * I + beta * X on the mask (exactly X where beta = 1).
void paste(const cv::Mat& image, const cv::Mat& x, const cv::Mat& mask, float beta, cv::Mat& out) {
  if (beta >= 1.0f) {
    x.copyTo(out, mask);
    return;
  }
  cv::Mat blended;
  cv::addWeighted(image, 1.0 - beta, x, beta, 0.0, blended);
  blended.copyTo(out, mask);
}

// paste() with soft edges: the weight beta * mask blurred with a Gaussian of `sigma` pixels
// (reflected at the border), out = (1 - w) * out + w * X everywhere, rounded to 8 bits.
void paste_feathered(const cv::Mat& x, const cv::Mat& mask, float beta, float sigma, cv::Mat& out) {
  cv::Mat w, wn, xf, of;
  mask.convertTo(w, CV_32F, beta);
  cv::GaussianBlur(w, w, cv::Size(0, 0), sigma, sigma, cv::BORDER_REFLECT);
  if (out.channels() == 3) cv::merge(std::vector<cv::Mat>{w, w, w}, w);
  x.convertTo(xf, CV_32F);
  out.convertTo(of, CV_32F);
  cv::subtract(cv::Scalar::all(1.0), w, wn);
  of = of.mul(wn) + xf.mul(w);
  of.convertTo(out, out.type());  // saturating, round to nearest
}

// X onto `out` on the mask, with hard edges (paste) or soft ones (params' feather > 0).
void paste_region(const cv::Mat& image, const cv::Mat& x, const cv::Mat& mask, float beta, float feather, cv::Mat& out) {
  if (feather > 0)
    paste_feathered(x, mask, beta, feather, out);
  else
    paste(image, x, mask, beta, out);
}

}  // namespace

// ---- TextureBank -----------------------------------------------------------------------------

std::string TextureBank::resolve(const std::string& folder, std::vector<std::string>* tried) {
  ResourceLocator loc;
  loc.add(folder);
  const fs::path given(folder);
  if (given.is_relative()) {
    // $FMAM_SHARED stands for the repo's sibling shared/ folder, however the path names it.
    if (const auto shared = env_value("FMAM_SHARED")) {
      for (const std::string prefix : {"../shared/", "shared/"})
        if (folder.rfind(prefix, 0) == 0) loc.add(fs::path(*shared) / folder.substr(prefix.size()));
    }
    loc.add_exe_ancestors(given);
  }
  const auto found = loc.find([](const ResourceLocator::Place& p) { return is_dir(p.path); }, tried);
  return found ? found->path.string() : "";
}

TextureBank::TextureBank(const std::string& folder) {
  std::vector<std::string> tried;
  folder_ = resolve(folder, &tried);
  if (folder_.empty()) {
    std::error_code ec;
    FMAM_CHECK(!fs::exists(folder, ec)) << "\"" << folder << "\" is not a folder; expected a folder of .jpg/.png textures";
    std::string where;
    for (const auto& t : tried) where += (where.empty() ? "" : ", ") + t;
    FMAM_CHECK(false) << "folder \"" << folder << "\" not found (tried " << where
                      << "); expected a folder of .jpg/.png textures, e.g. DTD's images/";
  }
  std::error_code ec;
  for (fs::recursive_directory_iterator it(folder_, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    std::string ext = it->path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (ext == ".jpg" || ext == ".jpeg" || ext == ".png") files_.push_back(it->path().string());
  }
  // Sorted, so a texture index means the same file on every machine.
  std::sort(files_.begin(), files_.end());
  FMAM_CHECK(!files_.empty()) << "folder \"" << folder << "\""
                              << (folder_ != folder ? " (found at \"" + folder_ + "\")" : std::string())
                              << " holds no .jpg/.jpeg/.png image (searched recursively)";
}

cv::Mat TextureBank::load(size_t index, cv::Size size, int channels) const {
  FMAM_CHECK(index < files_.size()) << "texture index " << index << " out of " << files_.size();
  const std::string& file = files_[index];
  cv::Mat m;
  try {
    m = cv::imread(file, channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    FMAM_CHECK(false) << "texture \"" << file << "\": cannot decode: " << e.what();
  }
  FMAM_CHECK(!m.empty()) << "texture \"" << file << "\": cannot decode (not an image, or truncated)";
  if (m.size() == size) return m;
  cv::Mat out;
  cv::resize(m, out, size, 0, 0, cv::INTER_LINEAR);
  return out;
}

// ---- AnomalySynthNode -------------------------------------------------------------------------

Shapes AnomalySynthNode::infer(const Params&, const Shapes& in) {
  const Shape& s = in.at(kIn);
  if (!s.known || s.dims.size() != 3) return {{kOut, s}, {kMask, Shape::of({1, -1, -1})}};
  if (s.dims[2] != -1 && s.dims[2] != 1 && s.dims[2] != 3)
    throw PortError("input", kIn.name, "needs 1 or 3 channels, got " + std::to_string(s.dims[2]));
  return {{kOut, s}, {kMask, Shape::of({1, s.dims[0], s.dims[1]})}};
}

AnomalySynthNode::AnomalySynthNode(const Params& p) : params_(p) {
  check_params(p);
  try {
    bank_ = TextureBank(p.textures);
  } catch (const Error& e) {
    throw Error(std::string("param \"textures\": ") + e.what());
  }
}

uint64_t AnomalySynthNode::frame_seed(int seed, long long frame_id) {
  return splitmix64(splitmix64(uint64_t(int64_t(seed))) ^ uint64_t(frame_id));
}

cv::Mat AnomalySynthNode::noise(cv::Size size, uint64_t seed, const Params& p) {
  Rng rng(seed);
  // DRAEM: 2 ** randint(min, max) cells along each axis, drawn independently.
  const int span = p.perlin_max_scale - p.perlin_min_scale;
  const int res_y = 1 << (p.perlin_min_scale + int(below(rng, span)));
  const int res_x = 1 << (p.perlin_min_scale + int(below(rng, span)));
  std::vector<double> angles(size_t(res_y + 1) * (res_x + 1));
  for (double& a : angles) a = 2.0 * kPi * uniform01(rng);
  const double degrees = (2.0 * uniform01(rng) - 1.0) * p.noise_rotation;
  cv::Mat field = perlin_2d(size, res_y, res_x, angles);
  if (p.noise_rotation <= 0.0f) return field;
  // As DRAEM's iaa.Affine(rotate=...): about the centre, bilinear, 0 outside (never masked).
  const cv::Mat rot = cv::getRotationMatrix2D(cv::Point2f((size.width - 1) * 0.5f, (size.height - 1) * 0.5f), degrees, 1.0);
  cv::Mat rotated;
  cv::warpAffine(field, rotated, rot, size, cv::INTER_LINEAR, cv::BORDER_CONSTANT, cv::Scalar(0));
  return rotated;
}

cv::Mat AnomalySynthNode::structure_image(const cv::Mat& image, int grid, bool flips, uint64_t seed) {
  Rng rng(seed);
  const int h = image.rows, w = image.cols;
  // At most one patch per pixel row/column; boundaries at floor(i * size / g), so sizes that g
  // does not divide give patches one pixel apart in size and the whole image is covered.
  const int g = std::max(1, std::min({grid, h, w}));
  std::vector<cv::Rect> rects;
  for (int r = 0; r < g; ++r)
    for (int c = 0; c < g; ++c) {
      const int y0 = r * h / g, y1 = (r + 1) * h / g, x0 = c * w / g, x1 = (c + 1) * w / g;
      rects.emplace_back(x0, y0, x1 - x0, y1 - y0);
    }
  // A patch moves only to a slot of its own shape, so S stays a permutation of I's pixels.
  std::vector<std::pair<cv::Size, std::vector<int>>> groups;
  for (int i = 0; i < int(rects.size()); ++i) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& gr) { return gr.first == rects[i].size(); });
    if (it == groups.end())
      groups.push_back({rects[i].size(), {i}});
    else
      it->second.push_back(i);
  }
  std::vector<int> source(rects.size());
  for (auto& [size, slots] : groups) {
    std::vector<int> perm = slots;
    for (size_t k = perm.size(); k > 1; --k) std::swap(perm[k - 1], perm[below(rng, k)]);  // Fisher-Yates
    for (size_t k = 0; k < slots.size(); ++k) source[slots[k]] = perm[k];
  }
  cv::Mat s(image.size(), image.type());
  for (size_t i = 0; i < rects.size(); ++i) {
    // Fresh headers each patch: `turned` may alias the input, which cv::rotate must not write.
    cv::Mat turned, mirrored;
    const cv::Rect& dst = rects[i];
    // A 90 deg turn would change a non-square patch's shape: those only turn by 0 or 180 deg.
    const int k = dst.width == dst.height ? int(below(rng, 4)) : 2 * int(below(rng, 2));
    const bool mirror = flips && below(rng, 2) == 1;
    const cv::Mat src = image(rects[source[i]]);
    if (k == 0)
      turned = src;
    else
      cv::rotate(src, turned, k == 1 ? cv::ROTATE_90_CLOCKWISE : k == 2 ? cv::ROTATE_180 : cv::ROTATE_90_COUNTERCLOCKWISE);
    if (mirror) {
      cv::flip(turned, mirrored, 1);
      mirrored.copyTo(s(dst));
    } else {
      turned.copyTo(s(dst));
    }
  }
  return s;
}

AnomalySynthNode::Result AnomalySynthNode::synthesize(const cv::Mat& image, uint64_t frame_seed, const Params& p,
                                                      const TextureBank& bank) {
  FMAM_CHECK(!image.empty()) << "input \"image\" is empty";
  FMAM_CHECK(image.depth() == CV_8U) << "input \"image\": expected 8-bit pixels, got OpenCV depth " << image.depth();
  FMAM_CHECK(image.channels() == 1 || image.channels() == 3)
      << "input \"image\": expected 3 (BGR) or 1 (gray) channels, got " << image.channels();
  check_params(p);
  Result r;
  r.m1 = cv::Mat::zeros(image.size(), CV_8UC1);
  r.m2 = cv::Mat::zeros(image.size(), CV_8UC1);
  // Every top-level draw happens whatever the branch, so the streams of the parts stay fixed.
  Rng rng(frame_seed);
  const bool anomalous = uniform01(rng) < double(p.probability);
  const uint64_t noise_seed = rng(), structure_seed = rng(), texture_draw = rng();
  const double beta_draw = uniform01(rng);
  const double shade_draw = uniform01(rng), gain_draw = uniform01(rng);  // drawn last: the paper's draws stay as they were
  if (!anomalous) {
    r.image = image.clone();
    return r;
  }
  r.anomalous = true;
  r.beta = p.opacity == Opacity::kNone ? 1.0f : float(p.beta_min + (p.beta_max - p.beta_min) * beta_draw);
  r.shaded = shade_draw < double(p.shade);
  if (r.shaded) r.shade_gain = float(p.shade_gain_min + (p.shade_gain_max - p.shade_gain_min) * gain_draw);

  // Masks: fresh noise until M1 or M2 is non-empty; one of them alone is fine (the frame then has
  // only a structure or only a texture defect; the AML only needs the union).
  Rng noise_rng(noise_seed);
  cv::Mat field;
  r.tau = p.tau;
  bool any = false;
  while (!any && r.attempts < kMaxAttempts) {
    field = noise(image.size(), noise_rng(), p);
    ++r.attempts;
    binarise(field, r.tau, r.m1, r.m2);
    any = cv::countNonZero(r.m1) + cv::countNonZero(r.m2) > 0;
  }
  if (!any) {
    // Fallback: half the last field's peak |P|; a flat field (a 1-pixel image) marks its centre.
    double lo, hi;
    cv::minMaxLoc(field, &lo, &hi);
    const double peak = std::max(std::abs(lo), std::abs(hi));
    r.tau = float(0.5 * peak);
    if (peak > 0)
      binarise(field, r.tau, r.m1, r.m2);
    else
      r.m1.at<uchar>(image.rows / 2, image.cols / 2) = 1;
  }

  r.image = image.clone();
  if (cv::countNonZero(r.m1) > 0) {
    r.structure = structure_image(image, p.grid, p.flips, structure_seed);
    paste_region(image, r.structure, r.m1, r.beta, p.feather, r.image);
  }
  if (cv::countNonZero(r.m2) > 0) {
    if (r.shaded) {
      image.convertTo(r.texture, image.type(), r.shade_gain);  // saturating, round to nearest
    } else {
      FMAM_CHECK(!bank.empty()) << "param \"textures\": no texture images loaded";
      r.texture = bank.load(size_t(texture_draw % bank.size()), image.size(), image.channels());
    }
    paste_region(image, r.texture, r.m2, r.beta, p.feather, r.image);
  }
  return r;
}

at::Tensor AnomalySynthNode::mask_tensor(const Result& r) {
  at::Tensor t = at::empty({1, 1, r.m1.rows, r.m1.cols}, at::kFloat);
  float* d = t.data_ptr<float>();
  for (int y = 0; y < r.m1.rows; ++y) {
    const uchar* a = r.m1.ptr<uchar>(y);
    const uchar* b = r.m2.ptr<uchar>(y);
    for (int x = 0; x < r.m1.cols; ++x) *d++ = (a[x] | b[x]) ? 1.0f : 0.0f;
  }
  return t;
}

void AnomalySynthNode::process(Context& ctx) {
  Result r = synthesize(kIn(ctx).get().mat, frame_seed(params_.seed, ctx.frame_id()), params_, bank_);
  kMask(ctx).send(Tensor{mask_tensor(r)});
  kOut(ctx).send(Image{std::move(r.image)});
}

FMAM_REGISTER_NODE(AnomalySynthNode);

}  // namespace fmam
