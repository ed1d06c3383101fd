# Included by the ctest -P scripts that test an installed shmlimit
# (RunConsumerTest.cmake, RunPkgConfigTest.cmake).
#
# shmlimit_install_for_test(<label> <required input>...)
#   fails unless SHMLIMIT_BUILD_DIR, SHMLIMIT_WORK_DIR and every required
#   input are set; SHMLIMIT_CONFIG defaults to RelWithDebInfo; empties
#   SHMLIMIT_WORK_DIR and installs the build into `prefix`
#   (${SHMLIMIT_WORK_DIR}/prefix), a variable of the caller. <label> starts
#   the messages.
macro(shmlimit_install_for_test label)
  foreach(var SHMLIMIT_BUILD_DIR SHMLIMIT_WORK_DIR ${ARGN})
    if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
      get_filename_component(_script "${CMAKE_SCRIPT_MODE_FILE}" NAME)
      message(FATAL_ERROR "${_script}: ${var} is not set")
    endif()
  endforeach()
  if(NOT SHMLIMIT_CONFIG)
    set(SHMLIMIT_CONFIG RelWithDebInfo)
  endif()

  set(prefix "${SHMLIMIT_WORK_DIR}/prefix")
  file(REMOVE_RECURSE "${SHMLIMIT_WORK_DIR}")
  file(MAKE_DIRECTORY "${SHMLIMIT_WORK_DIR}")

  set(_install "${CMAKE_COMMAND}" --install "${SHMLIMIT_BUILD_DIR}" --prefix "${prefix}"
               --config "${SHMLIMIT_CONFIG}")
  list(JOIN _install " " _shown)
  message(STATUS "${label}: install: ${_shown}")
  execute_process(COMMAND ${_install} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out
                  ERROR_VARIABLE _err)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "${label}: install failed (${_rc}):\n${_out}\n${_err}")
  endif()
endmacro()
