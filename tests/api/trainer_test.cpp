// fmam::Trainer and the declared "train" section: every mistake of a section reported at once,
// naming the file and the field; progress reported per batch and epoch; cancel() leaves a
// checkpoint that resume finishes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "api/train_config.h"
#include "fmam/trainer.h"
#include "framework/model_file.h"

namespace fmam {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

const std::string kSrc = FMAM_SOURCE_DIR;
const std::string kBottle = kSrc + "/../shared/data/mvtec_ad/bottle";

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

fs::path temp_dir() {
  static fs::path p = [] {
    fs::path d = fs::temp_directory_path() / ("fmam_trainer_test_" + std::to_string(getpid()));
    fs::create_directories(d);
    return d;
  }();
  return p;
}

// graphs/rkd_train.json with its train section's text edited (first occurrence of `from`).
std::string edited_graph(const std::string& name, const std::string& from, const std::string& to) {
  std::string text = slurp(kSrc + "/graphs/rkd_train.json");
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  const std::string path = (temp_dir() / (name + ".json")).string();  // not in graphs/: tests list that folder
  std::ofstream(path) << text;
  return path;
}

std::vector<std::string> problems_of(const GraphConfig& g, const std::vector<ParamOverride>& sets = {}) {
  try {
    parse_train_config(g, sets);
  } catch (const GraphError& e) {
    return e.problems();
  }
  return {};
}

TEST(TrainConfigTest, EveryMistakeOfTheSectionNamesTheFileAndField) {
  const std::string path = edited_graph("typos", "\"batch_size\": 16", "\"batch_sise\": 16, \"drop_last\": \"yes\"");
  GraphConfig g = load_graph_file(path);
  fs::remove(path);
  std::string all;
  for (const auto& p : problems_of(g)) all += p + "\n";
  EXPECT_THAT(all, AllOf(HasSubstr(path + ": train: unknown field \"batch_sise\"; known: inference_graph, batch_size"),
                         HasSubstr(path + ": train.drop_last: expected true or false, got \"yes\"")));
}

TEST(TrainConfigTest, StageFieldsAreCheckedAndOverriddenByName) {
  GraphConfig g = load_graph_file(kSrc + "/graphs/rkd_train.json");
  std::string all;
  for (const auto& p : problems_of(g, {parse_override("stage1.lr=-1"), parse_override("stage2.epochs=2.5")})) all += p + "\n";
  EXPECT_THAT(all, AllOf(HasSubstr("graphs/rkd_train.json: train.stages \"stage1\": lr: must be > 0, got -1"),
                         HasSubstr("train.stages \"stage2\": epochs: expected an integer, got 2.5")));
  try {
    parse_train_config(g, {parse_override("stage1.lrate=0.1")});
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("--set stage1.lrate: stage \"stage1\" has no setting \"lrate\"; known: epochs, lr, betas"));
  }
  const TrainConfig c = parse_train_config(g, {parse_override("stage1.betas=[0.5,0.999]"), parse_override("train.image_size=\"96x48\"")});
  EXPECT_EQ(c.stages[0].beta1, 0.5);
  EXPECT_EQ(c.image_width, 96);
  EXPECT_EQ(c.image_height, 48);
}

TEST(TrainConfigTest, CheckReportsTheSectionWithTheGraphsSide) {
  const std::string path = edited_graph("check", "\"train\": [\"student\"]", "\"train\": [\"studnet\"], \"epoch\": 3");
  const std::string cmd = std::string(FMAM_BINARY_DIR) + "/apps/fmam check " + path + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int rc = pclose(p);
  fs::remove(path);
  EXPECT_NE(rc, 0);
  EXPECT_THAT(out, HasSubstr(": unknown field \"epoch\"; known: name, epochs"));
  GraphConfig g = parse_graph(slurp(kSrc + "/graphs/rkd_train.json"), kSrc + "/graphs/rkd_train.json");
  EXPECT_TRUE(train_config_problems(g).empty()) << train_config_problems(g).front();
  g.train_json.replace(g.train_json.find("\"student\""), 9, "\"studnet\"");
  ASSERT_FALSE(train_config_problems(g).empty());
  EXPECT_THAT(train_config_problems(g).front(), HasSubstr("train: no node \"studnet\" in the graph"));
}

TEST(TrainerTest, ProgressCancelAndResume) {
  if (!fs::exists(kBottle)) GTEST_SKIP() << "no shared data at " << kBottle;
  TrainOptions o;
  o.data = kBottle;
  o.out = (temp_dir() / "cancel.fmam").string();
  o.overrides = {"stage1.epochs=3", "stage2.epochs=0", "train.image_size=64", "train.batch_size=2"};
  o.max_images = 4;
  Trainer t(kSrc + "/graphs/rkd_train.json", o);
  EXPECT_EQ(t.images(), 4);
  EXPECT_EQ(t.image_width(), 64);
  std::vector<TrainProgress> seen;
  const TrainResult r = t.train([&](const TrainProgress& p) {
    seen.push_back(p);
    if (p.epoch == 1 && p.batch == 1 && !p.epoch_done) t.cancel();  // in epoch 2 of 3
  });
  // The frames of epoch 2 may all be decoding already (they are read ahead): it stops at the
  // first batch boundary it can, at the latest before epoch 3.
  EXPECT_FALSE(r.finished);
  EXPECT_THAT(r.stopped_at, AllOf(HasSubstr("batch "), HasSubstr(" of stage1")));
  ASSERT_FALSE(seen.empty());
  bool epoch_one_done = false;
  for (const auto& p : seen) {
    EXPECT_EQ(p.stage, "stage1");
    EXPECT_EQ(p.batches, 2);
    EXPECT_EQ(p.batch_size, 2);
    if (p.epoch_done && p.epoch == 0) {
      epoch_one_done = true;
      EXPECT_EQ(p.images, 4);
      EXPECT_GT(p.losses.at("loss_kd"), 0);
    }
  }
  EXPECT_TRUE(epoch_one_done);
  EXPECT_FALSE(load_model(o.out).progress.empty()) << "a cancelled run leaves a resumable checkpoint";
  o.resume = true;
  const TrainResult done = Trainer(kSrc + "/graphs/rkd_train.json", o).train();
  EXPECT_TRUE(done.finished);
  EXPECT_TRUE(load_model(o.out).progress.empty()) << "a finished model carries no checkpoint";
}

}  // namespace
}  // namespace fmam
