// Test main: loads the built-in plugin once, as the runner does, then runs every test.
#include <gtest/gtest.h>

#include "api/plugins.h"

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  fmam::ensure_plugins();  // as the library does: once, whoever asks first
  return RUN_ALL_TESTS();
}
