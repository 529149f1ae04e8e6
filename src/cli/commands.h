// The subcommands of the bitdelta binary; one file each (cli/<name>.cpp).
#pragma once

namespace bd {

// Each returns the process exit code; errors are thrown as bd::Error / bd::UsageError.
int run_apply(int argc, char** argv);
int run_attest(int argc, char** argv);
int run_compress(int argc, char** argv);
int run_eval(int argc, char** argv);
int run_generate(int argc, char** argv);
int run_id(int argc, char** argv);
int run_registry(int argc, char** argv);
int run_inspect(int argc, char** argv);
int run_privacy(int argc, char** argv);
int run_serve(int argc, char** argv);
int run_safety(int argc, char** argv);
int run_screen(int argc, char** argv);
int run_soup(int argc, char** argv);
int run_tokenize(int argc, char** argv);
int run_train(int argc, char** argv);

}  // namespace bd
