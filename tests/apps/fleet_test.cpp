// fmam fleet without a scheduler: the manifest's checks and messages, submit's plan (--dry-run),
// one task's markers on failure and on a finished product, and gather's table, on fleet folders
// built by hand. The real Slurm run is tests/fleet/slurm_fleet_test.sh (ctest SlurmFleetTest).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/support/helpers.h"

namespace {

namespace fs = std::filesystem;
using testing::HasSubstr;
using testing::Not;

using Result = fmam::test::CliResult;
using fmam::test::slurp;

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// A fresh folder per test.
fs::path temp_dir() {
  const auto* info = testing::UnitTest::GetInstance()->current_test_info();
  fs::path d = fmam::test::process_temp_dir("fmam_fleet_test") / info->name();
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Runs fmam with `args` from the repo root (`env` prepended to the command line).
Result fmam(const std::string& args, const std::string& env = "") {
  return fmam::test::run_fmam(args, fmam::test::process_temp_dir("fmam_fleet_test_output"),
                              env + " ");  // not temp_dir()'s parent: that would be emptied
}

const std::string kGraph = std::string(FMAM_SOURCE_DIR) + "/graphs/fmam_rkd_train.json";

// A category folder in MVTec layout with no image in it: training fails at once.
fs::path empty_category(const fs::path& dir) {
  fs::create_directories(dir / "train" / "good");
  fs::create_directories(dir / "test" / "good");
  return dir;
}

TEST(FleetTest, HelpAnswersTheNextQuestion) {
  Result top = fmam("--help");
  EXPECT_THAT(top.out, HasSubstr("fleet ..."));
  Result h = fmam("fleet --help");
  EXPECT_EQ(h.rc, 0);
  for (const char* s : {"submit MANIFEST --out DIR", "task MANIFEST --out DIR", "gather DIR", "product,data,graph,overrides",
                        "JOB_COMPLETION_INDEX", "docs/SCALE.md"})
    EXPECT_THAT(h.out, HasSubstr(s));
  Result s = fmam("fleet submit --help");
  EXPECT_EQ(s.rc, 0);
  for (const char* x : {"usage: fmam fleet submit MANIFEST --out DIR", "--partition P", "--time T", "--cpus N", "--dry-run",
                        "overrides  fmam train --set KEY=VALUE", "DONE", "resumes", "examples:"})
    EXPECT_THAT(s.out, HasSubstr(x));
  Result g = fmam("fleet gather --help");
  EXPECT_THAT(g.out,
              HasSubstr("product,status,image_auroc,pixel_auroc,aupro,threshold,train_seconds,attempts,model,report,log,error"));
  Result t = fmam("fleet task --help");
  EXPECT_THAT(t.out, HasSubstr("SLURM_ARRAY_TASK_ID"));
  EXPECT_THAT(t.out, HasSubstr("exit status: 0 done"));
  Result bad = fmam("fleet launch");
  EXPECT_EQ(bad.rc, 2);
  EXPECT_THAT(bad.err, HasSubstr("unknown subcommand \"launch\"; one of submit, task, gather"));
}

TEST(FleetTest, ManifestProblemsNameFileLineAndColumnAllAtOnce) {
  const fs::path d = temp_dir();
  empty_category(d / "cat");
  write(d / "manifest.csv",
        "product,data,graph,overrides\n"
        "a,cat," +
            kGraph +
            ",stage1.epochs=1\n"
            "b,," +
            kGraph +
            ",\n"  // line 3: no data
            "a,cat," +
            kGraph +
            ",epochs\n"  // line 4: duplicate, bad override
            "c/d,nowhere," +
            std::string(FMAM_SOURCE_DIR) +
            "/graphs/fmam_rkd.json,\n"      // line 5
            "\"e,f\",cat,missing.json\n");  // line 6
  Result r = fmam("fleet submit " + (d / "manifest.csv").string() + " --out " + (d / "out").string() + " --dry-run");
  EXPECT_EQ(r.rc, 1);
  const std::string m = (d / "manifest.csv").string();
  EXPECT_THAT(r.err, HasSubstr(m + ":3: column \"data\" is empty"));
  EXPECT_THAT(r.err, HasSubstr(m + ":4: column \"product\": \"a\" is already on line 2"));
  EXPECT_THAT(r.err, HasSubstr(m + ":4: column \"overrides\": \"epochs\" is not KEY=VALUE"));
  EXPECT_THAT(r.err, HasSubstr(m + ":5: column \"product\": \"c/d\" is not a folder name"));
  EXPECT_THAT(r.err, HasSubstr(m + ":5: column \"data\": \"" + (d / "nowhere").string() + "\" is not a folder"));
  EXPECT_THAT(r.err, HasSubstr(m + ":5: column \"graph\": \"" + std::string(FMAM_SOURCE_DIR) +
                               "/graphs/fmam_rkd.json\" is not a training graph (no train.inference_graph)"));
  EXPECT_THAT(r.err, HasSubstr(m + ":6: column \"product\": \"e,f\" is not a folder name"));  // quoted comma
  EXPECT_THAT(r.err, HasSubstr(m + ":6: column \"graph\": \"" + (d / "missing.json").string() + "\" does not exist"));
  EXPECT_THAT(r.err, HasSubstr("(8 problems)"));
  EXPECT_FALSE(fs::exists(d / "out"));

  write(d / "header.csv", "product,data,grpah\nx,cat,g.json\n");
  Result h = fmam("fleet submit " + (d / "header.csv").string() + " --out " + (d / "out").string());
  EXPECT_EQ(h.rc, 1);
  EXPECT_THAT(h.err, HasSubstr(":1: unknown column \"grpah\"; known: product, data, graph, overrides"));
  EXPECT_THAT(h.err, HasSubstr(":1: the header has no column \"graph\""));
  write(d / "empty.csv", "# nothing\n\n");
  EXPECT_THAT(fmam("fleet submit " + (d / "empty.csv").string() + " --out x").err, HasSubstr("empty manifest"));
  EXPECT_THAT(fmam("fleet submit " + (d / "manifest.csv").string()).err, HasSubstr("--out DIR is required"));
}

TEST(FleetTest, DryRunLeavesDoneProductsOutOfTheArray) {
  const fs::path d = temp_dir();
  empty_category(d / "cat");
  std::string csv = "# comment\nproduct,graph,data\n";  // columns in any order
  for (const char* p : {"p0", "p1", "p2", "p3", "p4"}) csv += std::string(p) + "," + kGraph + ",cat\n";
  write(d / "m.csv", csv);
  const fs::path out = d / "out";
  write(out / "p0" / "DONE", "x\n");
  write(out / "p1" / "model.fmam", "x");
  write(out / "p2" / "FAILED", "{}\n");
  write(out / "p4" / "DONE", "x\n");
  Result r = fmam("fleet submit " + (d / "m.csv").string() + " --out " + out.string() +
                  " --dry-run --partition cpu --time 1:00:00 --cpus 4 --max-parallel 2 --sbatch=--account=vision");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, testing::ContainsRegex("p0 +skip: done"));
  EXPECT_THAT(r.out, testing::ContainsRegex("p1 +resume from " + (out / "p1" / "model.fmam").string()));
  EXPECT_THAT(r.out, testing::ContainsRegex("p2 +retry after failure"));
  EXPECT_THAT(r.out, testing::ContainsRegex("p3 +train"));
  EXPECT_THAT(r.out, HasSubstr("sbatch --array=1-3%2 --job-name=fmam-fleet --output=" + out.string() +
                               "/.fleet/slurm-%A_%a.out --export=ALL,FMAM="));
  EXPECT_THAT(r.out,
              HasSubstr(" --partition=cpu --time=1:00:00 --cpus-per-task=4 --account=vision " + std::string(FMAM_SOURCE_DIR) +
                        "/cluster/slurm/train_array.sbatch " + out.string() + "/.fleet/manifest-"));
  EXPECT_THAT(r.out, HasSubstr("dry run: nothing written, nothing submitted"));
  EXPECT_FALSE(fs::exists(out / "manifest.csv"));
  EXPECT_FALSE(fs::exists(out / ".fleet"));

  write(out / "p1" / "DONE", "x\n");
  write(out / "p2" / "DONE", "x\n");
  write(out / "p3" / "DONE", "x\n");
  Result all = fmam("fleet submit " + (d / "m.csv").string() + " --out " + out.string());
  EXPECT_EQ(all.rc, 0);
  EXPECT_THAT(all.out, HasSubstr("every product is done; nothing to submit"));
}

TEST(FleetTest, SubmitWithoutSlurmSaysWhatIsMissing) {
  const fs::path d = temp_dir();
  empty_category(d / "cat");
  write(d / "m.csv", "product,data,graph\np,cat," + kGraph + "\n");
  Result r = fmam("fleet submit " + (d / "m.csv").string() + " --out " + (d / "out").string(), "PATH=/nonexistent");
  EXPECT_EQ(r.rc, 127);
  EXPECT_THAT(r.err, HasSubstr("cannot run sbatch"));
  EXPECT_THAT(r.err, HasSubstr("Debian: slurm-client"));
}

TEST(FleetTest, TaskRecordsAFailureWithItsLogAndSkipsDoneProducts) {
  const fs::path d = temp_dir();
  empty_category(d / "cat");
  write(d / "m.csv", "product,data,graph,overrides\nok,cat," + kGraph + ",\nbad,cat," + kGraph + ",stage1.epochs=1\n");
  const fs::path out = d / "out";
  Result r = fmam("fleet task " + (d / "m.csv").string() + " --out " + out.string() + " --index 1");
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("bad: train failed (exit status 1)"));
  const nlohmann::json f = nlohmann::json::parse(slurp(out / "bad" / "FAILED"));
  EXPECT_EQ(f["step"], "train");
  EXPECT_EQ(f["why"], "exit status 1");
  EXPECT_EQ(f["log"], (out / "bad" / "log").string());
  EXPECT_THAT(f["message"].get<std::string>(), HasSubstr("holds no image"));
  EXPECT_THAT(f["job"].get<std::string>(), HasSubstr("local ("));  // not under a scheduler
  const std::string log = slurp(out / "bad" / "log");
  EXPECT_THAT(log, HasSubstr("fmam train " + kGraph + " --data " + (d / "cat").string()));
  EXPECT_THAT(log, HasSubstr("--set stage1.epochs=1"));
  EXPECT_THAT(log, Not(HasSubstr("--resume")));
  EXPECT_FALSE(fs::exists(out / "bad" / "DONE"));
  EXPECT_FALSE(fs::exists(out / "ok")) << "a task touches its own product only";
  const nlohmann::json st = nlohmann::json::parse(slurp(out / "bad" / "status.json"));
  EXPECT_EQ(st["status"], "failed");
  EXPECT_EQ(st["attempts"], 1);

  // Index from the scheduler's environment; a finished product is skipped, its files untouched.
  write(out / "ok" / "DONE", "earlier\n");
  Result skip = fmam("fleet task " + (d / "m.csv").string() + " --out " + out.string(), "SLURM_ARRAY_TASK_ID=0");
  EXPECT_EQ(skip.rc, 0) << skip.err;
  EXPECT_THAT(skip.err, HasSubstr("ok: already done"));
  EXPECT_FALSE(fs::exists(out / "ok" / "log"));
  Result k8s = fmam("fleet task " + (d / "m.csv").string() + " --out " + out.string(), "JOB_COMPLETION_INDEX=0");
  EXPECT_THAT(k8s.err, HasSubstr("ok: already done"));

  // A retry counts the attempt and replaces the marker.
  Result again = fmam("fleet task " + (d / "m.csv").string() + " --out " + out.string() + " --index 1");
  EXPECT_EQ(again.rc, 1);
  EXPECT_EQ(nlohmann::json::parse(slurp(out / "bad" / "status.json"))["attempts"], 2);

  Result past = fmam("fleet task " + (d / "m.csv").string() + " --out " + out.string() + " --index 2");
  EXPECT_EQ(past.rc, 1);
  EXPECT_THAT(past.err,
              HasSubstr("index 2 is past the last product of " + (d / "m.csv").string() + " (2 products, indices 0-1)"));
  Result none = fmam("fleet task " + (d / "m.csv").string() + " --out " + out.string(),
                     "env -u SLURM_ARRAY_TASK_ID -u JOB_COMPLETION_INDEX");
  EXPECT_THAT(none.err, HasSubstr("no product index: give --index I"));
}

TEST(FleetTest, GatherWritesOneRowPerProductAndAnIndex) {
  const fs::path d = temp_dir();
  write(d / "manifest.csv",
        "product,data,graph,overrides\n"
        "done_one,/d1,/g.json,\n"
        "failed_one,/d2,/g.json,\n"
        "running_one,/d3,/g.json,\n"
        "pending_one,/d4,/g.json,\n");
  write(d / "done_one" / "results.json",
        R"({"image_auroc": 0.98765, "pixel_auroc": 0.9, "aupro": 0.75, "threshold": 0.123456789, "train_seconds": 61.25})");
  write(d / "done_one" / "status.json", R"({"status": "done", "attempts": 2, "train_seconds": 61.25})");
  write(d / "done_one" / "log", "...\n");
  write(d / "done_one" / "DONE", "x\n");
  write(d / "failed_one" / "FAILED",
        R"({"step": "eval", "why": "exit status 1", "message": "a <b> \"quoted\", message", "log": "x"})");
  write(d / "failed_one" / "status.json", R"({"status": "failed", "attempts": 1, "train_seconds": 3.5})");
  write(d / "failed_one" / "log", "line one\nfmam: a <b> \"quoted\", message\n");
  write(d / "running_one" / "status.json", R"({"status": "training", "attempts": 1, "train_seconds": 0})");

  Result r = fmam("fleet gather " + d.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(slurp(d / "fleet.csv"),
            "product,status,image_auroc,pixel_auroc,aupro,threshold,train_seconds,attempts,model,report,log,error\n"
            "done_one,done,0.9877,0.9000,0.7500,0.123457,61.2,2,done_one/model.fmam,done_one/report/report.html,done_one/log,\n"
            "failed_one,failed,,,,,3.5,1,,,failed_one/log,\"eval: exit status 1: a <b> \"\"quoted\"\", message\"\n"
            "running_one,training,,,,,0.0,1,,,,\n"
            "pending_one,pending,,,,,,,,,,\n");
  EXPECT_THAT(r.err, HasSubstr("4 product(s): 1 done, 1 failed, 1 pending, 1 training"));
  EXPECT_THAT(r.out, HasSubstr("failed: failed_one: eval: exit status 1"));
  const std::string html = slurp(d / "index.html");
  EXPECT_THAT(html, HasSubstr("<a href=\"done_one/report/report.html\">report</a>"));
  EXPECT_THAT(html, HasSubstr("<h2>Failures</h2>"));
  EXPECT_THAT(html, HasSubstr("fmam: a &lt;b&gt; &quot;quoted&quot;, message"));  // the log's tail, escaped
  EXPECT_THAT(html, HasSubstr("<a href=\"failed_one/log\">"));
  EXPECT_THAT(html, Not(HasSubstr("<b>")));
  // Atomic writes leave no temporary file behind.
  for (const auto& e : fs::directory_iterator(d)) EXPECT_THAT(e.path().filename().string(), Not(HasSubstr(".tmp")));

  Result none = fmam("fleet gather " + (d / "done_one").string());
  EXPECT_EQ(none.rc, 1);
  EXPECT_THAT(none.err, HasSubstr((d / "done_one" / "manifest.csv").string() + " does not exist; is"));
}

}  // namespace
