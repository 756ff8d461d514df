"""The compiled text core (C, built by pip with the machine's compiler): the ASCII fast path of dedupe and compression.

Everything else about the package is in pyproject.toml; only the extension is here, since setuptools
still warns that its pyproject form (``[tool.setuptools] ext-modules``) is experimental.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("memtape._textcore", sources=["memtape/_textcore.c"], extra_compile_args=["-O3"])])
