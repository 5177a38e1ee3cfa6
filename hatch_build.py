"""Build hook: compile the frame analysis's kernel (pipeline/_tiles.c) into the wheel.

The kernel keeps the analysis's CPU near the decoder's (issue 6, bench/RESULTS.md). It is
plain C on the buffer protocol: Python's headers and a C compiler are all it needs. Without
them the wheel is built without it and the numpy path, which computes the same integers, runs
instead; set SOPLINE_PURE_PYTHON=1 to build that wheel on purpose.
"""
from __future__ import annotations

import os
import tempfile

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

KERNEL = "pipeline._tiles"
SOURCE = "pipeline/_tiles.c"


class CompiledKernelHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or os.environ.get("SOPLINE_PURE_PYTHON"):
            return
        editable = version == "editable"  # the source tree is imported: build next to the source
        try:
            built = _compile(self.root, inplace=editable)
        except Exception as exc:  # no compiler or headers: distutils raises its own errors
            self.app.display_warning(f"sopline: compiled kernel not built ({exc}); the numpy path will run")
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if not editable:
            build_data["force_include"][built] = "pipeline/" + os.path.basename(built)


def _compile(root: str, inplace: bool) -> str:
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    here = os.getcwd()
    os.chdir(root)  # distutils takes the source and in-place target relative to the project
    try:
        dist = Distribution({"name": "sopline-kernel", "ext_modules": [Extension(KERNEL, [SOURCE])]})
        command = build_ext(dist)
        command.inplace = inplace
        scratch = tempfile.mkdtemp(prefix="sopline-build-")
        command.build_temp = os.path.join(scratch, "temp")
        command.build_lib = os.path.join(scratch, "lib")
        command.ensure_finalized()
        command.run()
        return os.path.abspath(command.get_ext_fullpath(KERNEL))
    finally:
        os.chdir(here)
