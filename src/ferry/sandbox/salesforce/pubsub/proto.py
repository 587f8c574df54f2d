"""The `eventbus.v1` message classes, built at import time from Salesforce's `pubsub_api.proto`.

protoc (grpcio-tools) compiles the proto to a descriptor set, which goes into a private descriptor pool:
no generated code is committed, and a client in the same process that generated its own stubs from the
same proto (as Salesforce's Python example does) does not clash with the server over the global pool.
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "eventbus.v1"
SERVICE = f"{PACKAGE}.PubSub"
PROTO_FILE = "pubsub_api.proto"


def _descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    from grpc_tools import protoc  # imported here: only needed once, to compile the proto

    with resources.as_file(resources.files(__package__ or __name__).joinpath(PROTO_FILE)) as proto, \
            tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pubsub_api.desc"
        status = protoc.main(["protoc", f"-I{proto.parent}", f"--descriptor_set_out={out}", proto.name])
        if status != 0:
            raise RuntimeError(f"protoc could not compile {PROTO_FILE} (exit status {status})")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _message_classes() -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    for file in _descriptor_set().file:
        pool.Add(file)
    package = pool.FindFileByName(PROTO_FILE)
    return {name: message_factory.GetMessageClass(desc) for name, desc in package.message_types_by_name.items()}


_CLASSES = _message_classes()

TopicRequest: Any = _CLASSES["TopicRequest"]
TopicInfo: Any = _CLASSES["TopicInfo"]
SchemaRequest: Any = _CLASSES["SchemaRequest"]
SchemaInfo: Any = _CLASSES["SchemaInfo"]
FetchRequest: Any = _CLASSES["FetchRequest"]
FetchResponse: Any = _CLASSES["FetchResponse"]
ConsumerEvent: Any = _CLASSES["ConsumerEvent"]
ProducerEvent: Any = _CLASSES["ProducerEvent"]
PublishRequest: Any = _CLASSES["PublishRequest"]
PublishResponse: Any = _CLASSES["PublishResponse"]
PublishResult: Any = _CLASSES["PublishResult"]
Error: Any = _CLASSES["Error"]

# enum values of the proto (ReplayPreset, ErrorCode)
LATEST, EARLIEST, CUSTOM = 0, 1, 2
ERROR_PUBLISH = 1
