# ctest -P script: installs a shmlimit build into a private prefix, then
#   1. asks pkg-config for `--cflags --libs shmlimit` from that prefix only;
#   2. checks libshmlimit_c's SONAME (libshmlimit_c.so.1) and that it exports
#      only shmlimit_* functions (readelf, nm: binutils);
#   3. compiles the C test with exactly the flags pkg-config gave and runs it.
#
# Inputs (-D): SHMLIMIT_BUILD_DIR, SHMLIMIT_WORK_DIR, SHMLIMIT_CONFIG,
#   SHMLIMIT_C_COMPILER, SHMLIMIT_PKG_CONFIG, SHMLIMIT_TEST_SOURCE,
#   SHMLIMIT_C_FLAGS (space-separated: -std=c99, warnings, sanitizers).
cmake_minimum_required(VERSION 3.25)

include("${CMAKE_CURRENT_LIST_DIR}/InstallForTest.cmake")
shmlimit_install_for_test("pkg-config test" SHMLIMIT_C_COMPILER SHMLIMIT_PKG_CONFIG
                          SHMLIMIT_TEST_SOURCE)

# run(<name> <output-var> <command>...): fails the test on a non-zero exit.
function(run name out)
  list(JOIN ARGN " " shown)
  message(STATUS "pkg-config test: ${name}: ${shown}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE output ERROR_VARIABLE error
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pkg-config test: ${name} failed (${rc}):\n${output}\n${error}")
  endif()
  set(${out} "${output}" PARENT_SCOPE)
endfunction()

file(GLOB_RECURSE pc_files "${prefix}/*/shmlimit.pc")
list(LENGTH pc_files n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "pkg-config test: expected one shmlimit.pc under ${prefix}, found: ${pc_files}")
endif()
get_filename_component(pc_dir "${pc_files}" DIRECTORY)

# Only our prefix: PKG_CONFIG_LIBDIR replaces the system search path.
set(ENV{PKG_CONFIG_LIBDIR} "${pc_dir}")
unset(ENV{PKG_CONFIG_PATH})
run(modversion version "${SHMLIMIT_PKG_CONFIG}" --modversion shmlimit)
run(flags flags "${SHMLIMIT_PKG_CONFIG}" --cflags --libs shmlimit)
run(libdir libdir "${SHMLIMIT_PKG_CONFIG}" --variable=libdir shmlimit)
message(STATUS "pkg-config test: shmlimit ${version}: ${flags}")
file(REAL_PATH "${libdir}" libdir)
file(REAL_PATH "${prefix}" real_prefix)
if(NOT flags MATCHES "-lshmlimit_c" OR NOT flags MATCHES "-I")
  message(FATAL_ERROR "pkg-config test: --cflags --libs gave '${flags}' (expected -I... -lshmlimit_c)")
endif()
string(FIND "${libdir}/" "${real_prefix}/" pos)
if(NOT pos EQUAL 0)
  message(FATAL_ERROR "pkg-config test: libdir '${libdir}' is not inside '${prefix}'")
endif()
if(NOT EXISTS "${libdir}/libshmlimit_c.so.1")
  message(FATAL_ERROR "pkg-config test: ${libdir}/libshmlimit_c.so.1 is missing")
endif()

find_program(readelf readelf)
find_program(nm nm)
if(readelf)
  run(soname dynamic "${readelf}" -d "${libdir}/libshmlimit_c.so")
  if(NOT dynamic MATCHES "Library soname: \\[libshmlimit_c\\.so\\.1\\]")
    message(FATAL_ERROR "pkg-config test: SONAME is not libshmlimit_c.so.1:\n${dynamic}")
  endif()
endif()
if(nm)
  run(symbols symbols "${nm}" -D --defined-only "${libdir}/libshmlimit_c.so")
  string(REPLACE "\n" ";" symbols "${symbols}")
  set(foreign "")
  set(exported 0)
  foreach(line IN LISTS symbols)
    if(line MATCHES "^[0-9a-f]+ [A-Za-z] (.+)$")
      set(sym "${CMAKE_MATCH_1}")
      if(sym MATCHES "^shmlimit_[a-z_]+@@SHMLIMIT_C_1$" OR sym MATCHES "^shmlimit_[a-z_]+$")
        math(EXPR exported "${exported} + 1")
      elseif(NOT sym MATCHES "^SHMLIMIT_C_1$")
        list(APPEND foreign "${sym}")
      endif()
    endif()
  endforeach()
  if(foreign)
    message(FATAL_ERROR "pkg-config test: libshmlimit_c.so exports more than the C API: ${foreign}")
  endif()
  if(exported LESS 20)
    message(FATAL_ERROR "pkg-config test: libshmlimit_c.so exports only ${exported} shmlimit_* symbols")
  endif()
  message(STATUS "pkg-config test: ${exported} shmlimit_* symbols exported, nothing else")
endif()

separate_arguments(cflags UNIX_COMMAND "${SHMLIMIT_C_FLAGS}")
separate_arguments(pc_flags UNIX_COMMAND "${flags}")
set(exe "${SHMLIMIT_WORK_DIR}/capi_test")
run(compile ignored "${SHMLIMIT_C_COMPILER}" ${cflags} "${SHMLIMIT_TEST_SOURCE}" -o "${exe}" ${pc_flags}
    "-Wl,-rpath,${libdir}")
run(run output "${exe}" "${SHMLIMIT_WORK_DIR}")
message(STATUS "pkg-config test: ${output}")
