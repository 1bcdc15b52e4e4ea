"""Builds nearstate's compiled core (src/nearstate/_core.c) with the machine's C compiler.

Everything else about the package is declared in pyproject.toml. The extension is
optional: if it cannot be built (no compiler, no Python headers) the install goes on,
says so once, and nearstate runs on its pure-Python core (see decision 0011).
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as e:  # no compiler at all
            self._say(e)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:  # a compiler error, missing headers
            self._say(e)

    @staticmethod
    def _say(e):
        print(
            f"nearstate: the compiled core was not built ({e}); "
            "nearstate will run on its pure-Python core, which is slower",
            file=sys.stderr,
        )


setup(
    ext_modules=[
        Extension(
            "nearstate._core",
            sources=["src/nearstate/_core.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-missing-field-initializers"],
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
