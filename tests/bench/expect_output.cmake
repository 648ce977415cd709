# Runs CMD with ARGS (a ;-list) and passes when it exits with EXPECT_RC and its output (stdout and
# stderr together) matches the regex EXPECT; the output is printed either way, so a failure shows
# what the command said. With ALLOW_SUCCESS, exit code 0 passes too (EXPECT unchecked): for a run
# that must stop with a message on a machine without a GPU and simply works on one with a GPU.
execute_process(COMMAND ${CMD} ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(ALLOW_SUCCESS AND rc EQUAL 0)
  return()
endif()
if(NOT rc STREQUAL "${EXPECT_RC}")
  message(FATAL_ERROR "expected exit code ${EXPECT_RC} from ${CMD} ${ARGS}, got '${rc}'")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "the output of ${CMD} ${ARGS} does not match '${EXPECT}'")
endif()
