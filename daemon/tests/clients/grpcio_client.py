#!/usr/bin/env python3
"""Calls rewindd the way a test lab's script would: Python grpcio over the
Unix socket, no .proto and no generated code, everything learnt from
server reflection (v1alpha, the only version grpcio-reflection speaks).

The channel is the plain `unix://PATH` one, without
`grpc.default_authority`: grpc-core then sends the socket path as
`:authority`, which rewindd must accept.

Prints one JSON object on stdout for daemon/tests/foreign_clients.rs:
services, the GetStatus answer, and the answers (errors) of two mutating
calls. Exits 2 with
a message naming `./dev setup` when grpcio, grpcio-reflection or protobuf
is missing.

    python3 daemon/tests/clients/grpcio_client.py /dev/socket/rewindd
    python3 daemon/tests/clients/grpcio_client.py --default-authority localhost /dev/socket/rewindd

`--default-authority` sets `grpc.default_authority`, the one-line fix for
servers that refuse grpc-core's authority (rewindd needs no such fix).
"""

import argparse
import json
import sys

try:
    import grpc
    from google.protobuf import json_format, message_factory
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
except ImportError as e:
    print(f"grpcio_client.py: {e}: run ./dev setup (pip installs grpcio, grpcio-reflection, protobuf)", file=sys.stderr)
    sys.exit(2)

SERVICE = "rewind.v1.Checkpoint"
TIMEOUT_S = 10


def unary(channel, pool, method_name):
    """A callable for SERVICE/method_name and its request class, both
    from the reflected descriptors."""
    method = pool.FindServiceByName(SERVICE).methods_by_name[method_name]
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        f"/{SERVICE}/{method_name}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    return call, request_class


def invoke(call, request):
    """The answer as a dict, or the error's code, message and
    `rewind-error-kind`."""
    try:
        return {"ok": json_format.MessageToDict(call(request, timeout=TIMEOUT_S))}
    except grpc.RpcError as e:
        metadata = dict(e.trailing_metadata() or ())
        return {"code": e.code().name, "details": e.details(), "kind": metadata.get("rewind-error-kind")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("socket", help="rewindd's Unix socket")
    parser.add_argument("--default-authority", metavar="NAME", help="send NAME as :authority")
    args = parser.parse_args()
    options = [("grpc.default_authority", args.default_authority)] if args.default_authority else []
    with grpc.insecure_channel(f"unix://{args.socket}", options=options) as channel:
        reflection = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(reflection.get_services())
        pool = DescriptorPool(reflection)

        get_status, request = unary(channel, pool, "GetStatus")
        status = get_status(request(), timeout=TIMEOUT_S)

        # Mutating calls whose answers are well-defined refusals here: no
        # checkpoint to commit (or no device-mapper on this host), and an
        # attempt count the service edge refuses. Both pass the caller
        # check first (SO_PEERCRED through the socket).
        calls = {}
        for method_name, fields in [
            ("CommitChanges", {"reason": "grpcio client test"}),
            ("StartCheckpoint", {"attempts": 0, "reason": "grpcio client test"}),
        ]:
            call, request = unary(channel, pool, method_name)
            calls[method_name] = invoke(call, request(**fields))

    json.dump(
        {
            "services": services,
            "status": json_format.MessageToDict(status, preserving_proto_field_name=True),
            "calls": calls,
        },
        sys.stdout,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
