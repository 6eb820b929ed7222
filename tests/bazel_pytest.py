"""Runs pytest on the files given as arguments; the entry of every Bazel py_test target."""
import os
import sys

import pytest

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *[os.path.join(here, os.path.basename(a))
                                                            for a in sys.argv[1:]]]))
