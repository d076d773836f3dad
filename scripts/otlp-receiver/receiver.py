"""A small OTLP/HTTP trace receiver for Ferry's tests.

Listens on 127.0.0.1 (an OS-chosen port unless one is given), accepts POST /v1/traces with an
ExportTraceServiceRequest in protobuf (optionally gzip-compressed), and appends one JSON line per span to OUT:
{"service", "name", "kind", "trace_id", "span_id", "parent_span_id", "attributes"} (ids in lowercase hex).
The first line on stdout is `listening PORT`.
"""

import gzip
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    v = getattr(any_value, kind)
    if kind in ("array_value", "kvlist_value"):
        return str(v)
    if kind == "bytes_value":
        return v.hex()
    return v


def make_handler(out_path):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            request = ExportTraceServiceRequest()
            try:
                request.ParseFromString(body)
            except Exception as e:  # a bad message: 400, as a collector would
                self.send_response(400)
                self.end_headers()
                self.wfile.write(str(e).encode())
                return
            lines = []
            for resource_spans in request.resource_spans:
                service = None
                for kv in resource_spans.resource.attributes:
                    if kv.key == "service.name":
                        service = value_of(kv.value)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        lines.append(
                            json.dumps(
                                {
                                    "service": service,
                                    "name": span.name,
                                    "kind": span.kind,
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent_span_id": span.parent_span_id.hex(),
                                    "attributes": {
                                        kv.key: value_of(kv.value) for kv in span.attributes
                                    },
                                }
                            )
                        )
            with open(out_path, "a", encoding="utf-8") as out:
                for line in lines:
                    out.write(line + "\n")
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    return Handler


def main():
    if len(sys.argv) < 2:
        print("usage: receiver.py OUT [PORT]", file=sys.stderr)
        return 2
    out_path = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(out_path))
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
