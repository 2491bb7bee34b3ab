// Input enumeration (folder, glob, single file, list file) and atomic writes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "framework/error.h"
#include "framework/io.h"
#include "tests/support/helpers.h"

namespace fmam {
namespace {

namespace fs = std::filesystem;
using testing::AllOf;
using testing::ElementsAre;
using testing::HasSubstr;
using testing::ThrowsMessage;

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("fmam_io_test") {}
};

void touch(const std::string& path, const std::string& text = "x") {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Every entry of a folder (names only), to see that no temporary file was left behind.
std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

// A folder: b.png, a.jpg, c.PNG, notes.txt, data.csv, sub/d.png.
struct ImageFolder : TempDir {
  ImageFolder() {
    for (const char* f : {"b.png", "a.jpg", "c.PNG", "notes.txt", "data.csv", "sub/d.png"}) touch(*this / f);
  }
};

// ---- list_images ---------------------------------------------------------------------------

TEST(IoTest, FolderListsItsImagesSortedAndSkipsTheRest) {
  ImageFolder d;
  EXPECT_THAT(list_images(d.path.string()), ElementsAre(d / "a.jpg", d / "b.png", d / "c.PNG"));
  EXPECT_THAT(list_images(d.path.string(), /*recursive=*/true),
              ElementsAre(d / "a.jpg", d / "b.png", d / "c.PNG", d / "sub/d.png"));
}

TEST(IoTest, GlobPatternListsMatchesSorted) {
  ImageFolder d;
  touch(d / "a.png");
  EXPECT_THAT(list_images(d / "*.png"), ElementsAre(d / "a.png", d / "b.png"));
  EXPECT_THAT(list_images(d / "?.jpg"), ElementsAre(d / "a.jpg"));
  EXPECT_THAT([&] { list_images(d / "*.bmp"); },
              ThrowsMessage<Error>(HasSubstr("--input \"" + d / "*.bmp" + "\": the pattern matches no image file")));
}

TEST(IoTest, SingleFileIsItself) {
  ImageFolder d;
  EXPECT_THAT(list_images(d / "b.png"), ElementsAre(d / "b.png"));
}

// A .txt list: one path per line, relative to the list's folder, in the list's order; blank
// lines, comments and trailing spaces / CR are ignored.
TEST(IoTest, ListFileKeepsOrderAndResolvesRelativePaths) {
  ImageFolder d;
  touch(d / "lists/set.txt", "../b.png\n# a comment\n\n../sub/d.png\r\n/abs/elsewhere.png   \n../a.jpg");
  EXPECT_THAT(list_images(d / "lists/set.txt"),
              ElementsAre(d / "lists/../b.png", d / "lists/../sub/d.png", "/abs/elsewhere.png", d / "lists/../a.jpg"));
  touch(d / "empty.txt", "# nothing\n\n");
  EXPECT_THAT([&] { list_images(d / "empty.txt"); },
              ThrowsMessage<Error>(HasSubstr("--input \"" + d / "empty.txt" + "\": the list file names no image")));
}

TEST(IoTest, MissingPathIsNamed) {
  TempDir d;
  EXPECT_THAT([&] { list_images(d / "nope"); },
              ThrowsMessage<Error>(HasSubstr("--input \"" + d / "nope" + "\": no such file or folder")));
}

TEST(IoTest, FolderWithoutImagesIsAnError) {
  TempDir d;
  EXPECT_THAT([&] { list_images(d.path.string()); },
              ThrowsMessage<Error>(AllOf(HasSubstr("--input \"" + d.path.string() + "\": the folder holds no image"),
                                         HasSubstr("add --recursive"))));
  touch(d / "readme.txt");
  touch(d / "deep/x.png");
  EXPECT_THAT([&] { list_images(d.path.string()); }, ThrowsMessage<Error>(HasSubstr("the folder holds no image")));
  EXPECT_THAT(list_images(d.path.string(), true), ElementsAre(d / "deep/x.png"));
}

TEST(IoTest, IsImageFileByExtension) {
  for (const char* f : {"a.png", "a.PNG", "b.jpg", "b.jpeg", "c.bmp", "d.tif", "d.tiff", "e.webp", "dir.x/f.Jpg"})
    EXPECT_TRUE(is_image_file(f)) << f;
  for (const char* f : {"a.txt", "png", "a.png.bak", "", "dir.png/readme"}) EXPECT_FALSE(is_image_file(f)) << f;
}

// ---- atomic writes -------------------------------------------------------------------------

TEST(IoTest, AtomicWriteTextCreatesFoldersReplacesAndLeavesNoTemp) {
  TempDir d;
  const std::string path = d / "out/deeper/scores.csv";
  atomic_write_text(path, "a long first version\nwith two lines\n");
  EXPECT_EQ(read_text(path), "a long first version\nwith two lines\n");
  atomic_write_text(path, "short");
  EXPECT_EQ(read_text(path), "short");  // replaced, not overwritten in place
  EXPECT_THAT(entries(d.path / "out/deeper"), ElementsAre("scores.csv"));
  atomic_write_text(path, "");
  EXPECT_EQ(read_text(path), "");
}

// A write killed by SIGKILL leaves its temporary behind; the next write of the same file removes
// it when its process is gone, and leaves a live process's (or another file's) alone.
TEST(IoTest, AtomicWriteRemovesTemporariesOfDeadWriters) {
  TempDir d;
  const std::string dead = d / ".model.tmp999999999_1.fmam";  // pid above any pid_max
  const std::string live = d / (".model.tmp" + std::to_string(::getppid()) + "_7.fmam");
  const std::string other = d / ".other.tmp999999999_1.fmam";
  for (const auto& p : {dead, live, other}) touch(p, std::string(1000, 'x'));
  atomic_write_text(d / "model.fmam", "new");
  EXPECT_EQ(read_text(d / "model.fmam"), "new");
  EXPECT_THAT(entries(d.path), testing::UnorderedElementsAre(".model.tmp" + std::to_string(::getppid()) + "_7.fmam",
                                                             ".other.tmp999999999_1.fmam", "model.fmam"));
}

// ---- read_image ----------------------------------------------------------------------------

TEST(IoTest, ReadImageNamesEveryKindOfUnreadableFile) {
  TempDir d;
  const std::string corpus = std::string(FMAM_SOURCE_DIR) + "/tests/testdata/bad_inputs/";
  EXPECT_EQ(read_image(corpus + "good.png", cv::IMREAD_COLOR).size(), cv::Size(64, 48));
  EXPECT_EQ(read_image(corpus + "photo.jpg", cv::IMREAD_COLOR).size(), cv::Size(64, 48));
  EXPECT_EQ(read_image(corpus + "gray16.png", cv::IMREAD_COLOR).type(), CV_8UC3);
  EXPECT_EQ(read_image(corpus + "rgba.png", cv::IMREAD_COLOR).type(), CV_8UC3);
  auto fails = [&](const std::string& path, const std::string& message, long long bound = kMaxImagePixels) {
    EXPECT_THAT([&] { read_image(path, cv::IMREAD_COLOR, bound); },
                ThrowsMessage<Error>(HasSubstr("\"" + path + "\": " + message)));
  };
  fails(corpus + "cut_png.png", "truncated PNG");
  fails(corpus + "cut_jpeg.jpg", "truncated JPEG");
  fails(corpus + "empty.png", "the file is empty");
  fails(corpus + "huge_header.png", "the header says 60000x60000 pixels, more than the bound of 67108864 pixels");
  fails(corpus + "not_an_image.jpg", "cannot decode: not a PNG, JPEG, BMP, TIFF, WebP or PNM image");
  fails(corpus + "dicom_like.png", "cannot decode: not a PNG, JPEG");  // GDCM used to abort() on it
  fails(corpus + "good.png", "the header says 64x48 pixels, more than the bound of 1000 pixels", 1000);
  fails(corpus + "photo.jpg", "the header says 64x48 pixels", 1000);
  fs::create_directories(d / "dir.png");
  fails(d / "dir.png", "a folder, not an image file");
  fs::create_symlink(d / "gone.png", d / "link.png");
  fails(d / "link.png", "a broken symbolic link");
  fails(d / "missing.png", "no such file");
  EXPECT_EQ(image_header_size(corpus + "photo.jpg"), std::make_pair(64, 48));
  EXPECT_EQ(image_header_size(corpus + "huge_header.png"), std::make_pair(60000, 60000));
  EXPECT_EQ(image_header_size(corpus + "not_an_image.jpg"), std::make_pair(-1, -1));
}

// Complete files damaged inside: OpenCV used to decode the JPEG (grey where libjpeg lost the
// data, its warning on stderr without the file name); the PNG failed without saying why.
TEST(IoTest, DamagedJpegAndPngAreRefusedByName) {
  const std::string corpus = std::string(FMAM_SOURCE_DIR) + "/tests/testdata/bad_inputs/";
  auto fails = [&](const std::string& path, const std::string& message) {
    EXPECT_THAT([&] { read_image(path, cv::IMREAD_COLOR); }, ThrowsMessage<Error>(HasSubstr("\"" + path + "\": " + message)));
  };
  fails(corpus + "damaged_jpeg.jpg", "damaged JPEG: Corrupt JPEG data: premature end of data segment");
  fails(corpus + "damaged_png.png", "damaged PNG: chunk IDAT at byte 33 fails its CRC check");

  // Sound files of every kind still decode: baseline and progressive JPEG, colour and gray, and a
  // PNG whose only damage is in a text chunk (no pixel changes: the chunk is dropped).
  cv::Mat img(40, 56, CV_8UC3);
  cv::randu(img, 0, 255);
  std::vector<uchar> buf;
  for (const std::vector<int>& opts : {std::vector<int>{}, std::vector<int>{cv::IMWRITE_JPEG_PROGRESSIVE, 1}}) {
    for (const cv::Mat& m : {img, cv::Mat(img.rows, img.cols, CV_8U, cv::Scalar(90))}) {
      ASSERT_TRUE(cv::imencode(".jpg", m, buf, opts));
      EXPECT_EQ(decode_image(std::string(buf.begin(), buf.end()), "sound.jpg", cv::IMREAD_COLOR).size(), img.size());
    }
  }
  ASSERT_TRUE(cv::imencode(".png", img, buf));
  std::string png(buf.begin(), buf.end());
  const std::string text = std::string("\0\0\0\x05tEXtab\0cd", 13) + "\xde\xad\xbe\xef";  // a wrong CRC
  png.insert(33, text);                                                                   // after IHDR
  testing::internal::CaptureStderr();
  EXPECT_EQ(cv::norm(decode_image(png, "text.png", cv::IMREAD_COLOR), img, cv::NORM_INF), 0);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");  // libpng used to warn "tEXt: CRC error", naming no file
  // A JPEG whose scan has a run of bytes overwritten (a bad sector), its markers intact.
  ASSERT_TRUE(cv::imencode(".jpg", img, buf));
  std::string jpg(buf.begin(), buf.end());
  for (size_t i = jpg.size() / 2; i < jpg.size() / 2 + 100; ++i) jpg[i] = char(i * 37 % 255);  // no 0xFF: no marker
  EXPECT_THAT([&] { decode_image(jpg, "sector.jpg", cv::IMREAD_COLOR); },
              ThrowsMessage<Error>(HasSubstr("\"sector.jpg\": damaged JPEG: ")));
}

// Folders and broken links named like images are listed, so the reader names them.
TEST(IoTest, FolderListingKeepsEntriesThatOnlyLookLikeImages) {
  TempDir d;
  touch(d / "in/a.png");
  fs::create_directories(d / "in/b.png");
  fs::create_symlink(d / "in/nowhere.png", d / "in/c.png");
  EXPECT_THAT(list_images(d / "in"), ElementsAre(d / "in/a.png", d / "in/b.png", d / "in/c.png"));
}

TEST(IoTest, AtomicWriteTextNamesThePathOnFailure) {
  TempDir d;
  touch(d / "a_file");
  EXPECT_THAT([&] { atomic_write_text(d / "a_file/x.csv", "1"); }, ThrowsMessage<Error>(HasSubstr(d / "a_file/x.csv")));
}

TEST(IoTest, AtomicWriteImageRoundTripsAndLeavesNoTemp) {
  TempDir d;
  cv::Mat img(7, 9, CV_8UC3);
  cv::randu(img, 0, 255);
  atomic_write_image(d / "img.png", img);
  cv::Mat back = cv::imread(d / "img.png", cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(back.empty());
  EXPECT_EQ(cv::norm(back, img, cv::NORM_INF), 0.0);
  // Replacing: a different size wins.
  cv::Mat small(2, 3, CV_8UC1, cv::Scalar(200));
  atomic_write_image(d / "img.png", small);
  back = cv::imread(d / "img.png", cv::IMREAD_UNCHANGED);
  EXPECT_EQ(back.size(), small.size());
  // Float maps keep their exact values as TIFF.
  cv::Mat map(4, 5, CV_32FC1);
  cv::randu(map, -1.0f, 1.0f);
  atomic_write_image(d / "map.tiff", map);
  cv::Mat map_back = cv::imread(d / "map.tiff", cv::IMREAD_UNCHANGED);
  ASSERT_EQ(map_back.type(), CV_32FC1);
  EXPECT_EQ(cv::norm(map_back, map, cv::NORM_INF), 0.0);
  EXPECT_THAT(entries(d.path), ElementsAre("img.png", "map.tiff"));
}

TEST(IoTest, AtomicWriteImageWithUnknownFormatNamesTheFileAndLeavesNothing) {
  TempDir d;
  cv::Mat img(4, 4, CV_8UC1, cv::Scalar(1));
  EXPECT_THAT([&] { atomic_write_image(d / "img.nosuchformat", img); },
              ThrowsMessage<Error>(HasSubstr(d / "img.nosuchformat" + ": cannot")));
  EXPECT_THAT(entries(d.path), testing::IsEmpty());
}

// Writers run concurrently (unlimited nodes), and two frames can map to the same output file
// (output_key collisions). Atomic writes to one path from several threads must each succeed and
// leave one complete version, never a mix, an error, or a temporary file.
TEST(IoTest, ConcurrentAtomicWritesToOnePathStayAtomic) {
  TempDir d;
  const std::string path = d / "shared.txt";
  const int kThreads = 4, kWrites = 50;
  std::atomic<int> failures{0};
  std::string first_error;
  std::mutex m;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      const std::string text(20000 + t, char('a' + t));  // each thread its own length and letter
      for (int i = 0; i < kWrites; ++i) {
        try {
          atomic_write_text(path, text);
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> l(m);
          if (!failures++) first_error = e.what();
        }
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0) << "first error: " << first_error;
  const std::string final_text = read_text(path);
  bool whole = false;
  for (int t = 0; t < kThreads; ++t) whole |= final_text == std::string(20000 + t, char('a' + t));
  EXPECT_TRUE(whole) << "the file holds a mix of writes (" << final_text.size() << " bytes)";
  EXPECT_THAT(entries(d.path), ElementsAre("shared.txt"));
}

// ---- output keys ---------------------------------------------------------------------------

TEST(IoTest, OutputKeyIsParentAndStem) {
  EXPECT_EQ(output_key("data/bottle/test/crack/000.png", 5), "crack_000");
  EXPECT_EQ(output_key("data/bottle/test/good/000.png", 6), "good_000");
  EXPECT_EQ(output_key("/abs/x/y.tiff", 0), "x_y");
  EXPECT_EQ(output_key("000.png", 3), "000");
  EXPECT_EQ(output_key("", 7), "frame_7");
}

}  // namespace
}  // namespace fmam
