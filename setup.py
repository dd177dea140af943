"""Build hook for the optional C part of rankalign (everything else is in pyproject.toml).

``rankalign.data._html_walk`` walks lxml's HTML trees in C (the StackExchange pipeline's HTML
to text, about twice as fast). It compiles against the libxml2 headers that ship with lxml;
when no compiler or lxml is at hand the build goes on without it and the pure-Python walk
is used (same output).
"""

from setuptools import Extension, setup


def _extensions() -> list[Extension]:
    try:
        import lxml
    except ImportError:
        return []
    return [Extension("rankalign.data._html_walk", ["src/rankalign/data/_html_walk.c"],
                      include_dirs=lxml.get_include(), optional=True)]


setup(ext_modules=_extensions())
