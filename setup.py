"""Build hook for the optional C part of rankalign (everything else is in pyproject.toml).

Two small extensions speed up the StackExchange pipeline (rankalign.data.stackexchange):
``rankalign.data._html_walk`` walks lxml's HTML trees in C (HTML to text, about twice as
fast; it compiles against the libxml2 headers that ship with lxml) and
``rankalign.data._se_rows`` parses the Posts.xml rows (with the libxml2 inside lxml), checks
them and writes the records of a conversion chunk. When no compiler
(or lxml) is at hand the build goes on without them and the same code in Python is used
(same output).
"""

from setuptools import Extension, setup


def _extensions() -> list[Extension]:
    try:
        import lxml
    except ImportError:
        return []
    return [
        Extension(f"rankalign.data.{name}", [f"src/rankalign/data/{name}.c"], depends=["src/rankalign/data/_common.h"],
                  include_dirs=lxml.get_include(), optional=True)
        for name in ("_html_walk", "_se_rows")
    ]


setup(ext_modules=_extensions())
