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
#   libnginx-mod-http-shmlimit
#                       nginx      the nginx module (with SHMLIMIT_BUILD_NGINX), as
#                                  Debian packages its own libnginx-mod-*
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
# Whoever builds the packages for distribution names themselves here
# (lintian flags the default's localhost address).
set(SHMLIMIT_DEB_MAINTAINER "shmlimit maintainers <shmlimit@localhost>" CACHE STRING
    "Maintainer field of the Debian packages: Name <address>")
set(CPACK_PACKAGE_CONTACT "${SHMLIMIT_DEB_MAINTAINER}")
# No CPACK_PACKAGE_DESCRIPTION_SUMMARY: CPack would put that one line before
# every package's description; each CPACK_DEBIAN_<COMPONENT>_DESCRIPTION
# below starts with its own synopsis, its other lines unindented (CPack
# indents them as the control file wants).
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
# The nginx module is packaged for the nginx whose sources built it: its
# Depends is that nginx's ABI (nginx:abi in nginx-dev's
# debian/libnginx-mod.abisubstvars, e.g. nginx-abi-1.22.1-7, which Debian's
# nginx Provides), so apt never pairs it with an nginx it cannot load into.
set(SHMLIMIT_NGINX_ABI "")
if(SHMLIMIT_BUILD_NGINX)
  set(_abi_file "${NGINX_SOURCE_DIR}/debian/libnginx-mod.abisubstvars")
  if(EXISTS "${_abi_file}")
    file(STRINGS "${_abi_file}" _abi_line REGEX "^nginx:abi=")
    string(REGEX REPLACE "^nginx:abi=[ \t]*" "" SHMLIMIT_NGINX_ABI "${_abi_line}")
  endif()
  if(SHMLIMIT_NGINX_ABI MATCHES "^nginx-abi-[0-9A-Za-z.+~-]+$")
    list(APPEND _shmlimit_components nginx)
  else()
    set(SHMLIMIT_NGINX_ABI "")
    message(STATUS "shmlimit: no nginx:abi in ${_abi_file}: no libnginx-mod-http-shmlimit package")
  endif()
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
# dpkg's ldconfig trigger (as dh_makeshlibs adds), beside CPack's own
# ldconfig call in postinst and postrm.
set(CPACK_DEBIAN_LIB_PACKAGE_CONTROL_EXTRA "${PROJECT_SOURCE_DIR}/cmake/debian/lib/triggers")
set(CPACK_DEBIAN_LIB_DESCRIPTION "one rate limiter shared by the processes of a host (C ABI)
libshmlimit_c.so.1: one rate limiter shared by the worker processes of a
host through a POSIX shared-memory segment, with a stable C ABI.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libshmlimit-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(_dev_depends "libshmlimit (= ${_deb_version}), libtomlplusplus-dev")
if(SHMLIMIT_BUILD_REDIS)
  string(APPEND _dev_depends ", libhiredis-dev, pkg-config")
endif()
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "${_dev_depends}")
set(CPACK_DEBIAN_DEV_DESCRIPTION "one rate limiter shared by the processes of a host (development files)
Headers of the C and C++ APIs, the static C++ library, the CMake package
(find_package(shmlimit)) and shmlimit.pc for pkg-config.")

set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME shmlimit-tools)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_TOOLS_DESCRIPTION "one rate limiter shared by the processes of a host (command-line tools)
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
# Byte-compiled on install (py3compile), the bytecode removed before the
# package is (py3clean): cmake/debian/python, as dh_python3 does.
set(CPACK_DEBIAN_PYTHON_PACKAGE_CONTROL_EXTRA "${PROJECT_SOURCE_DIR}/cmake/debian/python/postinst"
    "${PROJECT_SOURCE_DIR}/cmake/debian/python/prerm")
set(CPACK_DEBIAN_PYTHON_DESCRIPTION "one rate limiter shared by the processes of a host (Python 3)
The Python binding of shmlimit, with the @limit decorator, Django REST
framework throttles and a Django middleware.")

# libnginx-mod-http-shmlimit, as Debian's libnginx-mod-http-*: the module
# in /usr/lib/nginx/modules, its load_module line in
# /usr/share/nginx/modules-available, enabled on install by the link
# /etc/nginx/modules-enabled/50-mod-http-shmlimit.conf (maintainer scripts
# in cmake/debian/nginx, doing what dh_nginx's do).
set(CPACK_DEBIAN_NGINX_PACKAGE_NAME libnginx-mod-http-shmlimit)
set(CPACK_DEBIAN_NGINX_PACKAGE_SECTION httpd)
set(CPACK_DEBIAN_NGINX_PACKAGE_DEPENDS "${SHMLIMIT_NGINX_ABI}")
set(CPACK_DEBIAN_NGINX_PACKAGE_RECOMMENDS nginx)
set(CPACK_DEBIAN_NGINX_PACKAGE_CONTROL_EXTRA "${PROJECT_SOURCE_DIR}/cmake/debian/nginx/postinst"
    "${PROJECT_SOURCE_DIR}/cmake/debian/nginx/prerm" "${PROJECT_SOURCE_DIR}/cmake/debian/nginx/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_NGINX_DESCRIPTION "one rate limiter shared by the processes of a host (nginx module)
ngx_http_shmlimit_module decides requests in nginx's preaccess phase, as
limit_req does, through a shmlimit segment: exact across nginx's workers,
shared with the application behind nginx, with Retry-After and RateLimit
headers. Enabled on install (modules-enabled/50-mod-http-shmlimit.conf);
it does nothing until the configuration uses its directives.")

# The Python package goes where Debian's python3 looks for packages of
# /usr (lib/python3/dist-packages), whatever SHMLIMIT_PYTHON_INSTALL_DIR
# says for a plain install (lib/python3.X/dist-packages, right for /usr/local).
# Every package gets /usr/share/doc/<package>/copyright and
# changelog.Debian.gz (cmake/ShmlimitCPackDebianDocs.cmake), as policy asks.
set(CPACK_SHMLIMIT_COPYRIGHT "${PROJECT_SOURCE_DIR}/cmake/debian/copyright")
find_program(SHMLIMIT_GZIP_PROGRAM gzip REQUIRED)
set(CPACK_SHMLIMIT_GZIP "${SHMLIMIT_GZIP_PROGRAM}")
set(CPACK_PRE_BUILD_SCRIPTS "${PROJECT_SOURCE_DIR}/cmake/ShmlimitCPackPython.cmake"
    "${PROJECT_SOURCE_DIR}/cmake/ShmlimitCPackDebianDocs.cmake")

include(CPack)

# Its test (label packaging), here: it needs to know whether the Python
# binding is built, which the top-level CMakeLists.txt decides after tests/.
if(SHMLIMIT_BUILD_TESTS)
  add_subdirectory(tests/packaging)
endif()
