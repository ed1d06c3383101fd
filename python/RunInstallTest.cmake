# ctest python.install: installs the `python` component into PREFIX, then
# imports the package from there (and only there) with PYTHON and makes one
# decision through it.
#   cmake -DBUILD_DIR=... -DPREFIX=... -DSITE=lib/python3.11/dist-packages -DPYTHON=... -P RunInstallTest.cmake
foreach(_v BUILD_DIR PREFIX SITE PYTHON)
  if(NOT DEFINED ${_v})
    message(FATAL_ERROR "RunInstallTest.cmake: -D${_v}=... is required")
  endif()
endforeach()

file(REMOVE_RECURSE "${PREFIX}")
execute_process(
  COMMAND ${CMAKE_COMMAND} --install "${BUILD_DIR}" --component python --prefix "${PREFIX}"
  RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "cmake --install --component python failed: ${_rc}")
endif()

set(_code [=[
import os, sys
import shmlimit
site = os.path.realpath(sys.argv[1])
assert os.path.realpath(shmlimit.__file__).startswith(site + os.sep), shmlimit.__file__
assert os.path.realpath(shmlimit._shmlimit.__file__).startswith(site + os.sep), shmlimit._shmlimit.__file__
from django.conf import settings
settings.configure(INSTALLED_APPS=["rest_framework"])
for sub in ("decorators", "logging", "django.conf", "django.throttling", "django.middleware"):
    __import__("shmlimit." + sub)
assert os.path.exists(os.path.join(site, "shmlimit", "py.typed"))
name = "/shmlimit-install-test-%d" % os.getpid()
with shmlimit.Limiter.create(name, capacity=64) as lim:
    try:
        lim.add_policy("p", "gcra", "2/h")
        got = [lim.acquire("p", "k").allowed for _ in range(3)]
        assert got == [True, True, False], got
    finally:
        shmlimit.Limiter.remove(name)
print("installed package OK:", shmlimit.__file__)
]=])
execute_process(
  COMMAND ${CMAKE_COMMAND} -E env --unset=PYTHONPATH "PYTHONPATH=${PREFIX}/${SITE}" PYTHONDONTWRITEBYTECODE=1
          "${PYTHON}" -c "${_code}" "${PREFIX}/${SITE}"
  WORKING_DIRECTORY "${PREFIX}"
  RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "importing the installed package failed: ${_rc}")
endif()
