#!/usr/bin/env python3
"""An Image Factory stand-in for lab tests that run vmctl inside the lab netns.

    factory_stub.py PORT IMAGE READY_FILE [BIND]

Serves IMAGE for every GET of /image/<schematic>/<version>/nocloud-amd64.qcow2 (any schematic,
any version) on BIND:PORT (default 127.0.0.1; 0.0.0.0 inside the lab netns lets lab guests reach
it on 198.18.0.1:PORT) and 404 for anything else (so `/versions` is "unknown" and vmctl
takes --version as given). Writes READY_FILE once it listens, so a test waits on that file, not
on a sleep. Only for tests: it answers what a test needs and nothing more.
"""

import http.server
import re
import sys

PATH_RE = re.compile(r"^/image/[0-9a-f]{64}/v[0-9][^/]*/nocloud-amd64\.qcow2$")


def main():
    port, image, ready = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    bind = sys.argv[4] if len(sys.argv) > 4 else "127.0.0.1"
    with open(image, "rb") as f:
        body = f.read()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if not PATH_RE.match(self.path):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            sys.stderr.write("factory-stub: " + fmt % args + "\n")

    server = http.server.ThreadingHTTPServer((bind, port), Handler)
    with open(ready, "w") as f:
        f.write(str(port))
    server.serve_forever()


if __name__ == "__main__":
    main()
