# CPack pre-build script (CPACK_PRE_BUILD_SCRIPTS of ShmlimitPackaging.cmake):
# in the staging tree of python3-shmlimit, moves usr/lib/python3.X/dist-packages
# to usr/lib/python3/dist-packages, the directory of Debian's python3 for
# packages installed under /usr.
file(GLOB _staged LIST_DIRECTORIES true
     "${CPACK_TEMPORARY_INSTALL_DIRECTORY}/*/usr/lib/python3.*/dist-packages"
     "${CPACK_TEMPORARY_INSTALL_DIRECTORY}/usr/lib/python3.*/dist-packages")
foreach(_dir IN LISTS _staged)
  get_filename_component(_lib "${_dir}" DIRECTORY)   # .../usr/lib/python3.X
  get_filename_component(_lib "${_lib}" DIRECTORY)   # .../usr/lib
  file(MAKE_DIRECTORY "${_lib}/python3")
  file(RENAME "${_dir}" "${_lib}/python3/dist-packages")
  file(GLOB _left "${_lib}/python3.*")
  foreach(_d IN LISTS _left)
    file(GLOB _content "${_d}/*")
    if(NOT _content)
      file(REMOVE_RECURSE "${_d}")
    endif()
  endforeach()
endforeach()
