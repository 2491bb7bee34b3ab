// Test main: loads the built-in plugin once, as the runner does, then runs every test.
#include <gtest/gtest.h>

#include "framework/registry.h"

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  fmam::load_builtin_plugin();
  return RUN_ALL_TESTS();
}
