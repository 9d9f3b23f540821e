// Compiled into every ctnn program when CTNN_SANITIZE is ON (see the top-level CMakeLists.txt):
// the sanitizers' default runtime options, so that any report is fatal however the program is
// started (by ctest, by hand, from a test's script). ASAN_OPTIONS, UBSAN_OPTIONS and
// LSAN_OPTIONS in the environment override them.

extern "C" {

// halt_on_error / abort_on_error: stop at the first report with SIGABRT, which no test can
// mistake for an ordinary failure exit. detect_leaks: LeakSanitizer at exit.
// detect_stack_use_after_return, check_initialization_order, strict_init_order,
// strict_string_checks: the checks ASan leaves off by default.
__attribute__((visibility("default"), used)) const char* __asan_default_options() {
  return "halt_on_error=1:abort_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:"
         "check_initialization_order=1:strict_init_order=1:strict_string_checks=1";
}

// The build uses -fno-sanitize-recover=all already; the stack says where the UB happened.
__attribute__((visibility("default"), used)) const char* __ubsan_default_options() {
  return "halt_on_error=1:abort_on_error=1:print_stacktrace=1";
}

}  // extern "C"
