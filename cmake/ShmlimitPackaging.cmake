# Debian packages of shmlimit, made by CPack from the install components
# (doc/packaging.md):
#
#   package             component  contents
#   libshmlimit         lib        libshmlimit_c.so.1 (the C ABI)
#   libshmlimit-dev     dev        headers, libshmlimit.a (+ libshmlimit_redis.a), the CMake
#                                  package, shmlimit.pc, the libshmlimit_c.so link
#   shmlimit-tools      tools      shmlimit, shmlimit-stress, man pages, bash completion,
#                                  systemd units, the manual
#   python3-shmlimit    python     the Python package for Debian's python3
#
# plus a -dbgsym package of each: binaries are stripped, their debug
# information kept apart (CPACK_DEBIAN_DEBUGINFO_PACKAGE). One version for
# all, project(VERSION). Made with
#
#   cmake --build build/ci --target package        (or: cd build/ci && cpack -G DEB)
#
# in any build that has the tools and the Python binding; the packages land
# in <build>/packages. A component another part of the build adds becomes a
# package when it is listed in CPACK_COMPONENTS_ALL below with its fields.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME shmlimit)
set(CPACK_PACKAGE_VENDOR "shmlimit")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_CONTACT "shmlimit maintainers <shmlimit@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "one rate limiter shared by every worker process on a host")
set(CPACK_RESOURCE_FILE_LICENSE "${PROJECT_SOURCE_DIR}/LICENSE")
set(CPACK_PACKAGE_DIRECTORY "${PROJECT_BINARY_DIR}/packages")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# No CPACK_STRIP_FILES: CPACK_DEBIAN_DEBUGINFO_PACKAGE (below) strips the
# ELF files itself after taking their debug information out; stripping
# first would leave nothing for the -dbgsym packages.

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(_shmlimit_components lib dev)
if(SHMLIMIT_BUILD_TOOLS)
  list(APPEND _shmlimit_components tools)
endif()
if(SHMLIMIT_BUILD_PYTHON)
  list(APPEND _shmlimit_components python)
endif()
set(CPACK_COMPONENTS_ALL ${_shmlimit_components})

set(CPACK_DEBIAN_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://localhost/shmlimit")
# Dependencies on shared libraries from dpkg-shlibdeps (package dpkg-dev).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_DEBUGINFO_PACKAGE ON)
set(_deb_version "${PROJECT_VERSION}-1")

set(CPACK_DEBIAN_LIB_PACKAGE_NAME libshmlimit)
set(CPACK_DEBIAN_LIB_DESCRIPTION "shmlimit: shared-memory rate limiter (C ABI)
 libshmlimit_c.so.1: one rate limiter shared by the worker processes of a
 host through a POSIX shared-memory segment, with a stable C ABI.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libshmlimit-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(_dev_depends "libshmlimit (= ${_deb_version}), libtomlplusplus-dev")
if(SHMLIMIT_BUILD_REDIS)
  string(APPEND _dev_depends ", libhiredis-dev, pkg-config")
endif()
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "${_dev_depends}")
set(CPACK_DEBIAN_DEV_DESCRIPTION "shmlimit: shared-memory rate limiter (development files)
 Headers of the C and C++ APIs, the static C++ library, the CMake package
 (find_package(shmlimit)) and shmlimit.pc for pkg-config.")

set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME shmlimit-tools)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_TOOLS_DESCRIPTION "shmlimit: shared-memory rate limiter (command-line tools)
 shmlimit creates, drives and inspects limiter segments, lists them, and
 serves their metrics to Prometheus (shmlimit exporter); shmlimit-stress
 checks a segment under forked workers and SIGKILLs. Man pages, bash
 completion and systemd units for the exporter and the textfile collector.")

set(CPACK_DEBIAN_PYTHON_PACKAGE_NAME python3-shmlimit)
set(CPACK_DEBIAN_PYTHON_PACKAGE_SECTION python)
if(SHMLIMIT_BUILD_PYTHON)
  # The extension is built for one CPython minor version (its ABI tag).
  math(EXPR _py_next_minor "${Python3_VERSION_MINOR} + 1")
  set(CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS
      "python3 (>= ${Python3_VERSION_MAJOR}.${Python3_VERSION_MINOR}), python3 (<< ${Python3_VERSION_MAJOR}.${_py_next_minor})")
endif()
set(CPACK_DEBIAN_PYTHON_DESCRIPTION "shmlimit: shared-memory rate limiter (Python 3)
 The Python binding of shmlimit, with the @limit decorator, Django REST
 framework throttles and a Django middleware.")

# The Python package goes where Debian's python3 looks for packages of
# /usr (lib/python3/dist-packages), whatever SHMLIMIT_PYTHON_INSTALL_DIR
# says for a plain install (lib/python3.X/dist-packages, right for /usr/local).
set(CPACK_PRE_BUILD_SCRIPTS "${PROJECT_SOURCE_DIR}/cmake/ShmlimitCPackPython.cmake")

include(CPack)

# Its test (label packaging), here: it needs to know whether the Python
# binding is built, which the top-level CMakeLists.txt decides after tests/.
if(SHMLIMIT_BUILD_TESTS)
  add_subdirectory(tests/packaging)
endif()
