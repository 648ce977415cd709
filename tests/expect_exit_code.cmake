# Runs CMD with ARGS and fails unless it exits with code 2 (pagoda's "bad input" code).
execute_process(COMMAND ${CMD} ${ARGS} RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
if(NOT rc EQUAL 2)
  message(FATAL_ERROR "expected exit code 2 from ${CMD} ${ARGS}, got ${rc}")
endif()
