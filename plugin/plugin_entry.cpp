// The built-in plugin's C entry point: hands every node of nodes/ to the runtime.
#include "framework/plugin_entry.h"

FMAM_PLUGIN_ENTRY()
