# ctest -P script: installs a shmlimit build into a private prefix, then
# configures, builds and runs tests/consumer against it via find_package.
#
# Inputs (-D): SHMLIMIT_BUILD_DIR, SHMLIMIT_CONSUMER_SOURCE_DIR,
#   SHMLIMIT_WORK_DIR, SHMLIMIT_CONFIG, SHMLIMIT_GENERATOR,
#   SHMLIMIT_MAKE_PROGRAM, SHMLIMIT_CXX_COMPILER, SHMLIMIT_CXX_FLAGS
#   (space-separated, e.g. the sanitizer flags of the build under test),
#   SHMLIMIT_CONSUMER_REDIS (ON: also require and run shmlimit::redis).
cmake_minimum_required(VERSION 3.25)

include("${CMAKE_CURRENT_LIST_DIR}/InstallForTest.cmake")
shmlimit_install_for_test(consumer SHMLIMIT_CONSUMER_SOURCE_DIR)
set(build "${SHMLIMIT_WORK_DIR}/build")

function(run_step name)
  list(JOIN ARGN " " shown)
  message(STATUS "consumer: ${name}: ${shown}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer: ${name} failed (${rc})")
  endif()
endfunction()

set(cxx_flags "${SHMLIMIT_CXX_FLAGS}")
set(configure_args
  -S "${SHMLIMIT_CONSUMER_SOURCE_DIR}" -B "${build}"
  "-DCMAKE_BUILD_TYPE=${SHMLIMIT_CONFIG}"
  "-DCMAKE_PREFIX_PATH=${prefix}"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF
  "-DCMAKE_CXX_FLAGS=${cxx_flags}"
  "-DCMAKE_EXE_LINKER_FLAGS=${cxx_flags}"
  "-DSHMLIMIT_CONSUMER_REDIS=${SHMLIMIT_CONSUMER_REDIS}")
if(SHMLIMIT_GENERATOR)
  list(APPEND configure_args -G "${SHMLIMIT_GENERATOR}")
endif()
if(SHMLIMIT_MAKE_PROGRAM)
  list(APPEND configure_args "-DCMAKE_MAKE_PROGRAM=${SHMLIMIT_MAKE_PROGRAM}")
endif()
if(SHMLIMIT_CXX_COMPILER)
  list(APPEND configure_args "-DCMAKE_CXX_COMPILER=${SHMLIMIT_CXX_COMPILER}")
endif()
run_step(configure "${CMAKE_COMMAND}" ${configure_args})

# The package must have come from our prefix, not from somewhere on the system.
file(STRINGS "${build}/CMakeCache.txt" found_dir REGEX "^shmlimit_DIR:")
string(REGEX REPLACE "^shmlimit_DIR:[A-Z]+=" "" found_dir "${found_dir}")
file(REAL_PATH "${prefix}" real_prefix)
file(REAL_PATH "${found_dir}" real_found_dir)
string(FIND "${real_found_dir}/" "${real_prefix}/" pos)
if(NOT pos EQUAL 0)
  message(FATAL_ERROR "consumer: shmlimit_DIR is '${found_dir}', not inside '${prefix}'")
endif()

run_step(build "${CMAKE_COMMAND}" --build "${build}" --config "${SHMLIMIT_CONFIG}")

find_program(consumer_exe shmlimit_consumer
  PATHS "${build}" "${build}/${SHMLIMIT_CONFIG}" NO_DEFAULT_PATH REQUIRED)
run_step(run "${consumer_exe}")
if(SHMLIMIT_CONSUMER_REDIS)
  find_program(consumer_redis_exe shmlimit_consumer_redis
    PATHS "${build}" "${build}/${SHMLIMIT_CONFIG}" NO_DEFAULT_PATH REQUIRED)
  run_step(run "${consumer_redis_exe}")
endif()
message(STATUS "consumer: OK")
