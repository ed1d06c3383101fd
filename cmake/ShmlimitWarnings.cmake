# shmlimit_set_warnings(<target>)
#
# Warning flags for shmlimit's own targets. Always PRIVATE: they never reach
# the installed interface or third-party code.
#   always:              -Wall -Wextra
#   SHMLIMIT_WERROR=ON:  -Wpedantic -Werror as well
include_guard(GLOBAL)

function(shmlimit_set_warnings target)
  if(MSVC)
    target_compile_options(${target} PRIVATE /W4 $<$<BOOL:${SHMLIMIT_WERROR}>:/WX>)
    return()
  endif()
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  if(SHMLIMIT_WERROR)
    target_compile_options(${target} PRIVATE -Wpedantic -Werror)
    # GCC >= 12 warns (-Wtsan) that ThreadSanitizer does not model
    # std::atomic_thread_fence. Keep that visible but not fatal in TSan builds.
    if(SHMLIMIT_SANITIZE MATCHES "thread" AND SHMLIMIT_CXX_HAS_WTSAN)
      target_compile_options(${target} PRIVATE -Wno-error=tsan)
    endif()
  endif()
endfunction()

include(CheckCXXCompilerFlag)
check_cxx_compiler_flag(-Wtsan SHMLIMIT_CXX_HAS_WTSAN)
