"""Builds the wheel's extension with the project's CMake (pyproject.toml).

The version is CMake's ``project(shmlimit VERSION x.y.z)`` in the top-level
CMakeLists.txt: read here for the wheel's metadata, and written by CMake into
``shmlimit/_version.py`` (``shmlimit.__version__``), so the two cannot differ.

build_ext configures the project (only the library and the binding: no tests,
tools or benchmarks) in ``<build_base>/cmake``, builds the target
``shmlimit_python`` and copies ``_shmlimit*.so`` and ``_version.py`` from the
CMake tree's package into the wheel. Environment:

  SHMLIMIT_CMAKE_BUILD_DIR  an already configured build tree of this project
                            (e.g. build/dev) to build the target in instead:
                            nothing is compiled again when it is up to date
  SHMLIMIT_BUILD_BASE       setuptools' build directory and where egg-info goes
                            (default: python/build), to keep the sources clean
  SHMLIMIT_CMAKE_ARGS       extra arguments for the configure step
  CMAKE_BUILD_PARALLEL_LEVEL  build jobs (default 2)
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def cmake_version() -> str:
    path = os.path.join(ROOT, "CMakeLists.txt")
    with open(path, encoding="utf-8") as f:
        m = re.search(r"project\(\s*shmlimit\s+VERSION\s+([0-9]+(?:\.[0-9]+){0,3})\b", f.read())
    if not m:
        raise RuntimeError("%s: no 'project(shmlimit VERSION x.y.z)' found" % path)
    return m.group(1)


class CMakeBuild(build_ext):
    """Builds shmlimit._shmlimit with the project's CMake instead of compiling sources."""

    def build_extension(self, ext: Extension) -> None:
        given = os.environ.get("SHMLIMIT_CMAKE_BUILD_DIR")
        if given:
            tree = os.path.abspath(given)
            if not os.path.isfile(os.path.join(tree, "CMakeCache.txt")):
                raise RuntimeError("SHMLIMIT_CMAKE_BUILD_DIR=%s is not a configured CMake build tree" % given)
        else:
            tree = os.path.abspath(os.path.join(self.build_temp, "cmake"))
            args = [
                "cmake", "-S", ROOT, "-B", tree,
                "-DCMAKE_BUILD_TYPE=Release",
                "-DPython3_EXECUTABLE=" + sys.executable,
                "-DSHMLIMIT_BUILD_PYTHON=ON",
                "-DSHMLIMIT_BUILD_TESTS=OFF",
                "-DSHMLIMIT_BUILD_TOOLS=OFF",
                "-DSHMLIMIT_BUILD_BENCH=OFF",
            ] + shlex.split(os.environ.get("SHMLIMIT_CMAKE_ARGS", ""))
            subprocess.check_call(args)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
        subprocess.check_call(["cmake", "--build", tree, "--target", "shmlimit_python", "-j", jobs])

        package = os.path.join(tree, "python", "shmlimit")
        built = [f for f in os.listdir(package) if f.startswith("_shmlimit") and f.endswith(".so")]
        if len(built) != 1:
            raise RuntimeError("expected one _shmlimit*.so in %s, found %s" % (package, built))
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(package, built[0]), target)
        version_py = os.path.join(package, "_version.py")
        with open(version_py, encoding="utf-8") as f:
            if cmake_version() not in f.read():
                raise RuntimeError("%s does not say version %s: reconfigure %s" % (version_py, cmake_version(), tree))
        shutil.copyfile(version_py, os.path.join(os.path.dirname(target), "_version.py"))


base = os.environ.get("SHMLIMIT_BUILD_BASE")
options = {}
if base:
    base = os.path.abspath(base)
    os.makedirs(base, exist_ok=True)
    options = {"build": {"build_base": base}, "egg_info": {"egg_base": base}}

setup(
    version=cmake_version(),
    packages=["shmlimit", "shmlimit.django"],
    package_data={"shmlimit": ["py.typed", "*.pyi"]},
    include_package_data=False,
    ext_modules=[Extension("shmlimit._shmlimit", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    options=options,
)
