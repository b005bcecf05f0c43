"""Only the one build step pyproject.toml cannot express; the metadata lives there.

On Python 3.13 and later the package carries a small C extension that gives durable-rules back
the `PyEval_CallObject` symbol 3.13 removed (see protection_rules/_pyeval_shim.c). Older
interpreters build nothing and the wheel stays pure Python.
"""

import sys

from setuptools import Extension, setup

PYEVAL_SHIM = Extension("_protection_rules_pyeval_shim", sources=["protection_rules/_pyeval_shim.c"])

setup(ext_modules=[PYEVAL_SHIM] if sys.version_info >= (3, 13) else [])
