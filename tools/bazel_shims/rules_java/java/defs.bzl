"""Bazel 4's built-in Java rules under the @rules_java names that @bazel_tools loads (offline; see
../rules_cc/cc/defs.bzl for why)."""
java_binary = native.java_binary
java_import = native.java_import
java_library = native.java_library
java_plugin = native.java_plugin
java_runtime = native.java_runtime
java_test = native.java_test
java_toolchain = native.java_toolchain
