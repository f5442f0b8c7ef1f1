"""ferry_proto_library: C++ messages and gRPC stubs from one .proto.

Bazel 4's proto rules want to build protoc from source (a download); Debian
already ships protoc and grpc_cpp_plugin, so a genrule calls them directly.
"""

def ferry_proto_library(name, src, deps = [], grpc = True):
    """Defines cc_library `name` from proto/`src`.

    Args:
      name: the cc_library to define.
      src: the .proto file in this package.
      deps: other ferry_proto_library targets whose .protos `src` imports.
      grpc: also generate the gRPC service stubs.
    """
    base = src[:-len(".proto")]
    outs = [base + ".pb.h", base + ".pb.cc"]
    if grpc:
        outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    dep_srcs = [d + "_srcs" for d in deps]
    native.filegroup(
        name = name + "_srcs",
        srcs = [src] + dep_srcs,
        visibility = ["//visibility:public"],
    )
    cmd = "/usr/bin/protoc -I. --cpp_out=$(GENDIR)"
    if grpc:
        cmd += " --grpc_out=$(GENDIR) --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin"
    cmd += " $(location %s)" % src
    native.genrule(
        name = name + "_gen",
        srcs = [src, name + "_srcs"],
        outs = outs,
        cmd = cmd,
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + ["@protobuf"] + (["@grpc"] if grpc else []),
        visibility = ["//visibility:public"],
    )
