# CPack pre-build script (CPACK_PRE_BUILD_SCRIPTS of ShmlimitPackaging.cmake):
# in the staging tree of every package, /usr/share/doc/<package>/copyright
# (cmake/debian/copyright, machine-readable) and changelog.Debian.gz (one
# entry for this version; gzip -9n; dated SOURCE_DATE_EPOCH when set, so
# a rebuild can give the same bytes), which Debian policy asks of every
# package (12.5, 12.7). What changed is in the sources' CHANGELOG.md.
if(NOT CPACK_GENERATOR STREQUAL "DEB")
  return()
endif()
string(TIMESTAMP _date "%a, %d %b %Y %H:%M:%S +0000" UTC)
set(_version "${CPACK_DEBIAN_PACKAGE_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE}")
foreach(_component IN LISTS CPACK_COMPONENTS_ALL)
  string(TOUPPER "${_component}" _upper)
  set(_package "${CPACK_DEBIAN_${_upper}_PACKAGE_NAME}")
  set(_root "${CPACK_TEMPORARY_INSTALL_DIRECTORY}/${_component}")
  if(NOT _package OR NOT IS_DIRECTORY "${_root}")
    continue()
  endif()
  set(_doc "${_root}${CPACK_PACKAGING_INSTALL_PREFIX}/share/doc/${_package}")
  file(MAKE_DIRECTORY "${_doc}")
  file(COPY_FILE "${CPACK_SHMLIMIT_COPYRIGHT}" "${_doc}/copyright")
  file(WRITE "${_doc}/changelog.Debian"
       "shmlimit (${_version}) unstable; urgency=medium\n\n"
       "  * shmlimit ${CPACK_PACKAGE_VERSION}, built with CPack from the project's\n"
       "    sources; CHANGELOG.md there lists what changed.\n\n"
       " -- ${CPACK_PACKAGE_CONTACT}  ${_date}\n")
  file(REMOVE "${_doc}/changelog.Debian.gz")
  execute_process(COMMAND "${CPACK_SHMLIMIT_GZIP}" -9n "${_doc}/changelog.Debian" RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "gzip failed (${_rc}) for ${_doc}/changelog.Debian")
  endif()
endforeach()
