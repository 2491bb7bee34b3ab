// Synthesises a DRAEM-style anomaly on a normal image (paper Sec. 3.4, Fig. 3): Perlin noise P
// (nodes/perlin.h) binarised at +tau -> M1 and at -tau -> M2 (disjoint); M1 shows the structure
// image S (I cut into grid x grid patches, each rotated by a multiple of 90 deg, shuffled), M2 a
// texture T (a random image of a folder, DTD by default, resized to I):
//   I' = I*(1-M) + (1-beta)*I*M + beta*(S*M1 + T*M2),  M = M1 + M2  (beta = 1: opacity "none").
// With feather > 0 the pasting weights beta*M1 and beta*M2 are Gaussian-blurred (sigma = feather
// pixels), so a defect fades into the image instead of ending at a hard edge; the mask stays M1|M2.
// With shade > 0, that share of frames shows in M2 not a texture but I itself darkened, T = g*I:
// a change of intensity without new structure, as foreign matter in a bottle (MVTec's
// contamination) looks; feathered, a smooth dark blob.
// Every draw derives from (seed, frame id), so the output never depends on thread scheduling.
#pragma once

#include <cstdint>
#include <opencv2/core/mat.hpp>
#include <string>
#include <vector>

#include "framework/node.h"
#include "framework/tensor_types.h"
#include "framework/types.h"

namespace fmam {

// The texture images of one folder (.jpg/.jpeg/.png, recursive, sorted), listed once; an image
// is decoded only when a frame draws it, so 1200 DTD images cost no memory.
class TextureBank {
 public:
  TextureBank() = default;  // empty: synthesis then fails if a frame needs a texture
  // Resolves `folder` (see resolve()) and lists it; throws Error naming the folder if it is
  // missing, not a folder, or holds no image.
  explicit TextureBank(const std::string& folder);
  // The first existing folder of: `folder` as given (cwd-relative); if it starts with
  // "../shared/" or "shared/", the rest under $FMAM_SHARED; `folder` relative to each ancestor of
  // the running executable's folder (so "../shared/..." is found from a build dir, as the
  // Backbone finds its weights). Returns "" when none exists; `tried` gets every candidate.
  static std::string resolve(const std::string& folder, std::vector<std::string>* tried = nullptr);

  size_t size() const { return files_.size(); }
  bool empty() const { return files_.empty(); }
  const std::string& folder() const { return folder_; }
  const std::vector<std::string>& files() const { return files_; }
  // Image `index`, decoded as `channels` (1 or 3) and resized (bilinear, as DRAEM's cv2.resize)
  // to `size`. Throws Error naming the file if it cannot be decoded.
  cv::Mat load(size_t index, cv::Size size, int channels) const;

 private:
  std::string folder_;
  std::vector<std::string> files_;
};

class AnomalySynthNode final : public Node {
 public:
  enum class Opacity { kNone, kUniform };
  struct Params {
    float tau = 0.5f;    // DRAEM's threshold
    int grid = 8;        // 8 x 8 = 64 patches (paper Sec. 3.4)
    bool flips = false;  // the paper only rotates
    std::string textures = "../shared/data/dtd/images";
    int perlin_min_scale = 0;  // DRAEM: 2^randint(0, 6) cells per axis
    int perlin_max_scale = 6;
    float noise_rotation = 90.0f;      // DRAEM rotates the noise by U(-90, 90) deg (iaa.Affine)
    Opacity opacity = Opacity::kNone;  // the paper's Fig. 3 pastes S and T as they are
    float beta_min = 0.2f;             // DRAEM's 1 - U(0, 0.8): the pasted content keeps >= 20 %
    float beta_max = 1.0f;
    float feather = 0.0f;  // the paper's masks have hard edges
    float shade = 0.0f;    // the paper's M2 always shows a texture
    float shade_gain_min = 0.4f;
    float shade_gain_max = 0.8f;
    float probability = 1.0f;  // DRAEM: 0.5; AML needs an anomaly in every frame
    int seed = 0;
  };
  static constexpr In<Image> kIn{"image"};
  static constexpr Out<Image> kOut{"image"};
  static constexpr Out<Tensor> kMask{"mask"};
  static Contract contract() {
    return Contract("AnomalySynth")
        .doc("DRAEM-style synthetic anomaly (Perlin mask, shuffled patches + DTD texture)")
        .in(kIn, "a normal image, 8-bit BGR (or gray), any size")
        .out(kOut, "the synthetic anomalous image I', same size and channels, 8-bit")
        .out(kMask, "float32 [1, 1, H, W]: 1 where synthesised (M1 or M2), else 0")
        .param(&Params::tau, "tau",
               "Perlin threshold: M1 = P > tau, M2 = P < -tau (P in [-1, 1]); if 16 fresh noise "
               "fields leave both empty, tau drops to half the last field's peak |P|",
               Range{0.0f, 1.0f})
        .param(&Params::grid, "grid",
               "structure image: grid x grid patches (clamped to the image size; uneven sizes "
               "shuffle among patches of equal shape)",
               Range{1, 64})
        .param(&Params::flips, "flips", "structure image: also mirror patches (8 square symmetries, not the 4 rotations)")
        .param(&Params::textures, "textures",
               "folder of .jpg/.png textures, searched recursively; relative paths are also "
               "tried under $FMAM_SHARED and the executable's ancestors")
        .param(&Params::perlin_min_scale, "perlin_min_scale",
               "noise cells per axis are 2^a, a uniform in [perlin_min_scale, perlin_max_scale)", Range{0, 10})
        .param(&Params::perlin_max_scale, "perlin_max_scale", "exclusive upper bound of the cell exponent", Range{1, 11})
        .param(&Params::noise_rotation, "noise_rotation",
               "the noise field is rotated by U(-r, r) degrees (0: axis-aligned blobs)", Range{0.0f, 180.0f})
        .param(&Params::opacity, "opacity",
               "none: paste S and T as they are (beta = 1, the paper's Fig. 3); uniform: beta "
               "~ U[beta_min, beta_max] blends them with I (DRAEM)",
               Choices<Opacity>{{"none", Opacity::kNone}, {"uniform", Opacity::kUniform}})
        .param(&Params::beta_min, "beta_min", "opacity uniform: lowest weight of the pasted content", Range{0.0f, 1.0f})
        .param(&Params::beta_max, "beta_max", "opacity uniform: highest weight of the pasted content", Range{0.0f, 1.0f})
        .param(&Params::feather, "feather",
               "sigma, in pixels, of a Gaussian blur of the pasting weights: defects fade into the "
               "image over about 2 sigma instead of ending at a hard edge (0: hard edges, the paper's); "
               "the mask output stays M1 | M2",
               Range{0.0f, 64.0f})
        .param(&Params::shade, "shade",
               "chance that a frame's M2 shows the image itself darkened, T = g * I with g ~ "
               "U[shade_gain_min, shade_gain_max], instead of a texture: an intensity defect without new "
               "structure (0: always a texture, the paper's)",
               Range{0.0f, 1.0f})
        .param(&Params::shade_gain_min, "shade_gain_min", "shade: lowest gain g (0: black)", Range{0.0f, 4.0f})
        .param(&Params::shade_gain_max, "shade_gain_max", "shade: highest gain g (above 1 brightens)", Range{0.0f, 4.0f})
        .param(&Params::probability, "probability", "chance that a frame gets an anomaly; otherwise I' = I and the mask is 0",
               Range{0.0f, 1.0f})
        .param(&Params::seed, "seed", "with the frame id, seeds every random draw of a frame")
        // Pure function of (input, seed, frame id): frames run in parallel.
        .concurrency(Concurrency::kUnlimited);
  }
  static Shapes infer(const Params& p, const Shapes& in);
  explicit AnomalySynthNode(const Params& p);
  void process(Context& ctx) override;

  // ---- the work, for the trainer and tests -------------------------------------------------
  struct Result {
    cv::Mat image;        // I', same size and type as the input
    cv::Mat m1, m2;       // CV_8UC1, 0 or 1: structure and texture regions (disjoint)
    cv::Mat structure;    // S (empty when M1 is empty or no anomaly)
    cv::Mat texture;      // T (empty when M2 is empty or no anomaly): a texture, or g * I when shaded
    bool shaded = false;  // T is the image darkened (params' shade), by shade_gain
    float shade_gain = 1.0f;
    bool anomalous = false;  // false: probability said no, I' = I, masks 0
    float beta = 1.0f;       // weight of the pasted content
    float tau = 0.0f;        // the threshold used (below params.tau after the fallback)
    int attempts = 0;        // noise fields drawn
  };
  // The per-frame seed: splitmix64 of (seed, frame id), independent of thread scheduling.
  static uint64_t frame_seed(int seed, long long frame_id);
  // One synthetic anomaly. All randomness comes from `frame_seed`.
  static Result synthesize(const cv::Mat& image, uint64_t frame_seed, const Params& p, const TextureBank& bank);
  // The Perlin field of one attempt (CV_32FC1, image size), rotated as the params say.
  static cv::Mat noise(cv::Size size, uint64_t seed, const Params& p);
  // The structure image S: grid x grid patches (row/col boundaries at floor(i*H/grid)), each
  // rotated by k*90 deg (k uniform; only 0/180 deg for non-square patches, which must keep their
  // shape) and optionally mirrored, shuffled among the patches of the same shape. S is a
  // permutation of I's pixels.
  static cv::Mat structure_image(const cv::Mat& image, int grid, bool flips, uint64_t seed);
  // The [1, 1, H, W] float mask of a result (M1 | M2).
  static at::Tensor mask_tensor(const Result& r);

 private:
  Params params_;
  TextureBank bank_;
};

}  // namespace fmam
