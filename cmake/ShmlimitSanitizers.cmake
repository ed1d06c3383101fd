# Applies SHMLIMIT_SANITIZE to every target of this build (compile and link).
# Must be included before any target is defined.
#   ""                   nothing
#   "address,undefined"  ASan + UBSan (any of address, undefined, leak)
#   "thread"             TSan (cannot be combined with address or leak)
# SHMLIMIT_SANITIZER_FLAGS is left set to the flags used, so that nested
# builds (the find_package consumer test) can use the same ones.
include_guard(GLOBAL)

set(SHMLIMIT_SANITIZER_FLAGS "")
if(SHMLIMIT_SANITIZE)
  string(REPLACE "," ";" _shmlimit_sans "${SHMLIMIT_SANITIZE}")
  foreach(_san IN LISTS _shmlimit_sans)
    if(NOT _san MATCHES "^(address|undefined|leak|thread)$")
      message(FATAL_ERROR "SHMLIMIT_SANITIZE: unknown sanitizer '${_san}' in '${SHMLIMIT_SANITIZE}'")
    endif()
  endforeach()
  if("thread" IN_LIST _shmlimit_sans AND ("address" IN_LIST _shmlimit_sans OR "leak" IN_LIST _shmlimit_sans))
    message(FATAL_ERROR "SHMLIMIT_SANITIZE: 'thread' cannot be combined with 'address' or 'leak'")
  endif()
  if(MSVC)
    message(FATAL_ERROR "SHMLIMIT_SANITIZE is supported with GCC and Clang only")
  endif()

  list(APPEND SHMLIMIT_SANITIZER_FLAGS "-fsanitize=${SHMLIMIT_SANITIZE}" -fno-omit-frame-pointer)
  if("undefined" IN_LIST _shmlimit_sans)
    list(APPEND SHMLIMIT_SANITIZER_FLAGS -fno-sanitize-recover=all)
  endif()
  unset(_shmlimit_sans)
  unset(_san)

  add_compile_options(${SHMLIMIT_SANITIZER_FLAGS})
  add_link_options(${SHMLIMIT_SANITIZER_FLAGS})
  message(STATUS "shmlimit: sanitizer flags: ${SHMLIMIT_SANITIZER_FLAGS}")
endif()
