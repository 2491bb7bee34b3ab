// The example plugin's one C entry point (fmam_register_plugin). fmam loads it with
//   fmam run GRAPH --plugin build/examples/libfmam_example_plugin.so ...
#include "framework/plugin_entry.h"

FMAM_PLUGIN_ENTRY()
