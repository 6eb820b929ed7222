"""Bazel 4's built-in C++ rules under the @rules_cc names that @bazel_tools loads.

Debian's bazel-rules-cc is written for newer Bazel and fails to load in bazel-bootstrap 4.2.3; the project
itself has no C++ targets, so forwarding to the native rules is all that is needed, with no download.
"""
cc_binary = native.cc_binary
cc_import = native.cc_import
cc_library = native.cc_library
cc_proto_library = native.cc_proto_library
cc_test = native.cc_test
cc_toolchain = native.cc_toolchain
cc_toolchain_suite = native.cc_toolchain_suite
fdo_prefetch_hints = native.fdo_prefetch_hints
fdo_profile = native.fdo_profile
objc_library = native.objc_library
objc_import = native.objc_import
