# Writes a man page from a program's --help with help2man (cmake -P).
#   -DHELP2MAN=help2man -DPROGRAM=path -DOUT=file.1 -DNAME="one line"
#   -DVERSION=x.y.z -DINCLUDE=static.h2m
#   -DSUBCOMMANDS="a;b;c"   also each `PROGRAM SUB --help`, as [COMMANDS]
#   -DGZIP=gzip             also write file.1.gz (gzip -9n: no name, no time
#                           stamp, so the same page gives the same bytes), the
#                           installed page (Debian policy 12.1)
# The page is made anew at every build of the program, from the text the
# program prints, so it cannot drift from --help.
cmake_minimum_required(VERSION 3.25)
get_filename_component(_dir "${OUT}" DIRECTORY)
file(MAKE_DIRECTORY "${_dir}")
set(_include "${OUT}.h2m")
file(READ "${INCLUDE}" _text)
if(SUBCOMMANDS)
  string(APPEND _text "\n[COMMANDS]\n")
  foreach(_sub IN LISTS SUBCOMMANDS)
    execute_process(COMMAND "${PROGRAM}" ${_sub} --help
      OUTPUT_VARIABLE _help RESULT_VARIABLE _rc)
    if(NOT _rc EQUAL 0)
      message(FATAL_ERROR "${PROGRAM} ${_sub} --help exited ${_rc}")
    endif()
    # roff: a backslash is \e; a line may not start with . or '.
    string(REPLACE "\\" "\\e" _help "${_help}")
    string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" _help "${_help}")
    string(APPEND _text ".SS \"${_sub}\"\n.nf\n${_help}.fi\n")
  endforeach()
endif()
file(WRITE "${_include}" "${_text}")
execute_process(
  COMMAND "${HELP2MAN}" --no-info --no-discard-stderr --section=1 "--name=${NAME}"
          "--version-string=${VERSION}" "--include=${_include}" "--output=${OUT}" "${PROGRAM}"
  RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "help2man failed (${_rc}) for ${PROGRAM}")
endif()
if(GZIP)
  execute_process(COMMAND "${GZIP}" -9nkf "${OUT}" RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "gzip failed (${_rc}) for ${OUT}")
  endif()
endif()
