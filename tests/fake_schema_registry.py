"""A stand-in for a Confluent schema registry, for tests/test_decode.c.

usage: fake_schema_registry.py DIR
Serves GET /schemas/ids/{id} on 127.0.0.1 (a free port, written to DIR/port)
from DIR/ids/{id}.avsc; any other id is a 404, as the registry answers.
Every request path is appended to DIR/requests.log.  It exits by itself
after two minutes, so a test that dies early leaves nothing running.
"""
import http.server
import json
import os
import sys
import threading

DIR = sys.argv[1]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(os.path.join(DIR, "requests.log"), "a") as log:
            log.write(self.path + "\n")
        prefix = "/schemas/ids/"
        path = os.path.join(DIR, "ids", self.path[len(prefix):] + ".avsc")
        if self.path.startswith(prefix) and self.path[len(prefix):].isdigit() and os.path.exists(path):
            with open(path) as f:
                status, body = 200, {"schema": f.read()}
        else:
            status, body = 404, {"error_code": 40403, "message": "Schema not found"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


threading.Timer(120, os._exit, args=(0,)).start()
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
with open(os.path.join(DIR, "port.tmp"), "w") as f:
    f.write(str(server.server_address[1]))
os.rename(os.path.join(DIR, "port.tmp"), os.path.join(DIR, "port"))
server.serve_forever()
