#!/usr/bin/env python3
"""A minimal OTLP/gRPC trace receiver for tests, on the official opentelemetry-proto and
grpcio packages: one JSON line per span received, with its resource's cluster and role.

usage: otlp_receiver.py OUT.jsonl ADDR      (ADDR: 127.0.0.1:0 picks a port)
Prints "listening on <port>" once it accepts exports."""
import json
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

OUT, ADDR = sys.argv[1], sys.argv[2]


def attribute(attributes, key):
    return next((a.value.string_value for a in attributes if a.key == key), None)


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        with open(OUT, "a") as out:
            for rs in request.resource_spans:
                attrs = rs.resource.attributes
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out.write(json.dumps({
                            "service": attribute(attrs, "service.name"),
                            "cluster": attribute(attrs, "ferry.cluster"),
                            "role": attribute(attrs, "ferry.role"),
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "name": span.name,
                        }) + "\n")
        return trace_service_pb2.ExportTraceServiceResponse()


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
port = server.add_insecure_port(ADDR)
if port == 0:
    sys.exit(f"cannot bind {ADDR}")
server.start()
print(f"listening on {port}", flush=True)
server.wait_for_termination()
