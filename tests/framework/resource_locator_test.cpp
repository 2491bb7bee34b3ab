// framework/resource_locator.h: the one search mechanism behind the plugin, weights and texture
// lookups. Fake executable folders in temporary trees, so each order is checked on known files.
#include "framework/resource_locator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "framework/registry.h"
#include "tests/support/helpers.h"

namespace fmam {
namespace {

namespace fs = std::filesystem;
using test::TempDir;
using testing::ElementsAre;

bool is_dir(const ResourceLocator::Place& p) { return fs::is_directory(p.path); }

std::vector<std::string> labels(const ResourceLocator& loc) {
  std::vector<std::string> out;
  for (const auto& p : loc.places()) out.push_back(p.label);
  return out;
}

TEST(ResourceLocatorTest, ExeAncestorsGoFromTheExecutableUpToTheRoot) {
  const ResourceLocator loc(fs::path("/a/b/c"));
  EXPECT_THAT(loc.exe_ancestors(), ElementsAre(fs::path("/a/b/c"), fs::path("/a/b"), fs::path("/a"), fs::path("/")));
  EXPECT_TRUE(ResourceLocator(fs::path()).exe_ancestors().empty());
}

TEST(ResourceLocatorTest, AddExeAncestorsNormalisesEachCandidateNearestFirst) {
  ResourceLocator loc(fs::path("/r/build/tests"));
  loc.add_exe_ancestors("../shared/x");
  EXPECT_THAT(labels(loc), ElementsAre("/r/build/shared/x", "/r/shared/x", "/shared/x", "/shared/x"));
}

TEST(ResourceLocatorTest, FindTakesTheFirstPlaceInOrderAndListsWhatItLookedAt) {
  TempDir t;
  fs::create_directories(t.path / "second");
  fs::create_directories(t.path / "third");
  ResourceLocator loc(fs::path{});
  loc.add(t.path / "first", "the first").add(t.path / "second").add(t.path / "third");
  std::vector<std::string> looked;
  const ResourceLocator::Place* p = loc.find(is_dir, &looked);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->path, t.path / "second");
  EXPECT_THAT(looked, ElementsAre("the first", (t.path / "second").string()));
}

TEST(ResourceLocatorTest, FindReturnsNullAndListsEveryPlaceWhenNothingMatches) {
  TempDir t;
  ResourceLocator loc(fs::path{});
  loc.add(t.path / "a").add(t.path / "b");
  std::vector<std::string> looked;
  EXPECT_EQ(loc.find(is_dir, &looked), nullptr);
  EXPECT_EQ(looked.size(), 2u);
}

// A checkout beside shared/ with a build tree: the nearest ancestor wins, not a farther one.
TEST(ResourceLocatorTest, NearestExeAncestorPrefersTheClosestRepo) {
  TempDir t;
  const fs::path exe = t.path / "outer" / "repo" / "build" / "tests";
  fs::create_directories(exe);
  fs::create_directories(t.path / "shared" / "weights");            // farther
  fs::create_directories(t.path / "outer" / "shared" / "weights");  // nearer
  const ResourceLocator loc(exe);
  const auto dir = [](const fs::path& p) { return fs::is_directory(p); };
  EXPECT_EQ(loc.nearest_exe_ancestor("shared/weights", dir), t.path / "outer");
  EXPECT_EQ(loc.nearest_exe_ancestor("shared/none", dir), fs::path());
}

// The texture bank's order: the path as given, $FMAM_SHARED, then the executable's ancestors;
// the search must stop at the first folder that exists.
TEST(ResourceLocatorTest, ExeRelativeCandidateFoundFromADeepBuildFolder) {
  TempDir t;
  const fs::path exe = t.path / "repo" / "build" / "tests";
  fs::create_directories(exe);
  fs::create_directories(t.path / "shared" / "dtd");
  ResourceLocator loc(exe);
  loc.add("../shared/dtd_not_from_cwd_" + std::to_string(getpid()));
  loc.add_exe_ancestors("../shared/dtd");
  std::vector<std::string> looked;
  const ResourceLocator::Place* p = loc.find(is_dir, &looked);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->path, t.path / "shared" / "dtd");
  EXPECT_EQ(looked.size(), 4u);  // as given, then from build/tests/, build/ and repo/
}

TEST(ResourceLocatorTest, EnvValueIgnoresUnsetAndEmpty) {
  ::unsetenv("FMAM_LOCATOR_TEST");
  EXPECT_FALSE(env_value("FMAM_LOCATOR_TEST"));
  ::setenv("FMAM_LOCATOR_TEST", "", 1);
  EXPECT_FALSE(env_value("FMAM_LOCATOR_TEST"));
  ::setenv("FMAM_LOCATOR_TEST", "/x", 1);
  EXPECT_EQ(env_value("FMAM_LOCATOR_TEST").value_or(""), "/x");
  ::unsetenv("FMAM_LOCATOR_TEST");
}

TEST(ResourceLocatorTest, LibraryDirIsTheFolderOfTheLibraryHoldingTheSymbol) {
  // load_builtin_plugin is in libfmam_core.so, built in <build>/framework.
  const fs::path d = library_dir(reinterpret_cast<void*>(&load_builtin_plugin));
  EXPECT_TRUE(fs::exists(d / "libfmam_core.so")) << d;
}

TEST(ResourceLocatorTest, ExecutableDirIsThisTestBinarysFolder) {
  EXPECT_TRUE(fs::exists(executable_dir() / "fmam_tests")) << executable_dir();
}

}  // namespace
}  // namespace fmam
