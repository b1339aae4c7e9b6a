// The `difftrain` executable: everything lives in the trainer library.
#include "trainer/commands/commands.h"

int main(int argc, char** argv) { return difftrain::trainer::run_cli(argc, argv); }
