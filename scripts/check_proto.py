"""Check that the gRPC messages built at run time are exactly ``proto/img_search.proto``, compiled by protoc.

The provider ships no ``protoc`` output (see ``docs/transports.md``): ``transport/grpc_messages.py``
describes the messages field by field and protobuf builds the classes at import. This script is the
reproducible link between the two: it compiles the ``.proto`` with grpcio-tools' bundled ``protoc``
and compares every message, field (number, type, label, oneof, type name, JSON name), enum and the
service with the run-time descriptor. It needs grpcio-tools, which the provider does not depend on::

    python -m venv /tmp/protoc && /tmp/protoc/bin/pip install grpcio-tools pydantic
    /tmp/protoc/bin/python scripts/check_proto.py        # exit 0: identical; 1: differences listed

Last run with grpcio-tools 1.85.1 (protoc of protobuf 7.36.2): identical.
"""

from __future__ import annotations

import difflib
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2, text_format

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto" / "img_search.proto"


def compiled() -> descriptor_pb2.FileDescriptorProto:
    """``proto/img_search.proto`` as protoc describes it (a ``FileDescriptorProto``).

    :raises RuntimeError: protoc refused the file.
    """
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        status = protoc.main(["protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out}", PROTO.name])
        if status != 0:
            raise RuntimeError(f"protoc failed on {PROTO} (exit {status})")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return files[0]


def _normalised(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """A copy with the file name, the one thing that differs by construction, made equal.

    :param file: a file descriptor.
    """
    copy = descriptor_pb2.FileDescriptorProto()
    copy.CopyFrom(file)
    copy.name = "img_search.proto"
    return copy


def differences() -> list[str]:
    """What differs between the compiled ``.proto`` and the run-time messages (empty: identical)."""
    sys.path.insert(0, str(ROOT))
    from airflow_provider_searchapi.transport import grpc_messages

    expected = text_format.MessageToString(_normalised(compiled())).splitlines()
    actual = text_format.MessageToString(_normalised(grpc_messages._file_descriptor())).splitlines()
    if expected == actual:
        return []
    return list(
        difflib.unified_diff(expected, actual, "protoc: proto/img_search.proto", "grpc_messages.py", lineterm="")
    )


def main() -> int:
    """Print the differences; exit 1 when there are any."""
    diff = differences()
    if diff:
        print("\n".join(diff))
        return 1
    print(f"{PROTO.relative_to(ROOT)} and transport/grpc_messages.py describe the same messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
