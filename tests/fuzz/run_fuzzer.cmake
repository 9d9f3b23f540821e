# One ctest run of a libFuzzer target (see CMakeLists.txt here):
#   cmake -DFUZZER=<exe> -DSEEDS=<seed dir> -DWORK=<dir> -DSECONDS=<n> [-DDICT=<file>] -P run_fuzzer.cmake
# The fuzzer runs for SECONDS on a fresh corpus WORK/corpus, reading the seeds without writing
# them. It fails on anything libFuzzer reports (crash, sanitizer report, leak, timeout,
# out-of-memory), printing the report and where the reproducer is; otherwise it prints how much
# it ran.
foreach(var FUZZER SEEDS WORK SECONDS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_fuzzer.cmake: -D${var}=... is required")
  endif()
endforeach()
get_filename_component(name ${FUZZER} NAME)
if(NOT EXISTS ${FUZZER})
  message(FATAL_ERROR "${name}: ${FUZZER} was not built (cmake --build <build dir>)")
endif()
file(GLOB seeds ${SEEDS}/*)
list(LENGTH seeds seed_count)
if(seed_count EQUAL 0)
  message(FATAL_ERROR "${name}: no seeds in ${SEEDS} (the build writes them: target ctnn_fuzz_corpus)")
endif()

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/corpus)
set(args -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512
         -print_final_stats=1 -artifact_prefix=${WORK}/)
if(DICT)
  list(APPEND args -dict=${DICT})
endif()
execute_process(COMMAND ${FUZZER} ${args} ${WORK}/corpus ${SEEDS}
                RESULT_VARIABLE result OUTPUT_FILE ${WORK}/fuzz.log ERROR_FILE ${WORK}/fuzz.log)
file(READ ${WORK}/fuzz.log log)

file(GLOB corpus ${WORK}/corpus/*)
list(LENGTH corpus corpus_count)
string(REGEX MATCH "stat::number_of_executed_units: *[0-9]+" runs "${log}")
string(REGEX REPLACE ".*: *" "" runs "${runs}")
string(REGEX MATCH "#[0-9]+[ \t]+DONE[^\n]*" done "${log}")
set(summary "${name}: ${runs} inputs in ${SECONDS} s from ${seed_count} seeds; ${corpus_count} new corpus entries; ${done}")

if(NOT result EQUAL 0 OR log MATCHES "ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error: |invariant violated")
  file(GLOB artifacts ${WORK}/crash-* ${WORK}/leak-* ${WORK}/timeout-* ${WORK}/oom-* ${WORK}/slow-unit-*)
  # The report: everything from the first error line on (the log's head is the fuzzing progress).
  string(REGEX MATCH "(==[0-9]+==ERROR|[^\n]*runtime error: |fuzz_[a-z]+: invariant violated|ALARM: |ERROR: libFuzzer|==[0-9]+== ERROR: libFuzzer).*" report "${log}")
  if(NOT report)
    set(report "${log}")
  endif()
  message("${report}")
  message(FATAL_ERROR "${name} FAILED (exit code ${result}); reproducer: ${artifacts}\n"
                      "replay it with: ${FUZZER} <reproducer>; full log: ${WORK}/fuzz.log\n${summary}")
endif()
message("${summary}")
