# cmake -DCOMMAND=<program;args...> -DEXPECT=<regex> [-DEXIT=nonzero] -P expect_run.cmake
# Passes only if COMMAND exits normally with status 0 (with EXIT=nonzero: any status but 0) and
# its output (stdout and stderr, merged) matches EXPECT. A test with PASS_REGULAR_EXPRESSION
# alone ignores the exit status, so a program crashing after the expected line would pass.
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
message("${out}")  # for the test log and for SKIP_REGULAR_EXPRESSION
if(NOT rc MATCHES "^[0-9]+$")
  message(FATAL_ERROR "${COMMAND}: did not exit normally: ${rc}")
elseif(EXIT STREQUAL "nonzero" AND rc EQUAL 0)
  message(FATAL_ERROR "${COMMAND}: exited with status 0, expected a failure")
elseif(NOT EXIT STREQUAL "nonzero" AND NOT rc EQUAL 0)
  message(FATAL_ERROR "${COMMAND}: exited with status ${rc}")
endif()
if(NOT out MATCHES "${EXPECT}")
  message(FATAL_ERROR "${COMMAND}: the output does not match '${EXPECT}'")
endif()
