"""Runs pytest on the test files given as arguments (the *.py ones; any other argument, such as `-m "not slow"`, goes
to pytest as it is); the entry of every Bazel py_test target."""
import os
import sys

import pytest

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    args = [os.path.join(here, os.path.basename(a)) if a.endswith(".py") else a for a in sys.argv[1:]]
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *args]))
