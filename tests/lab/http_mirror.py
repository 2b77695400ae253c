#!/usr/bin/env python3
"""Static file server for the lab mirrors (started by http-mirror.sh).

Python's http.server plus what download tests need:
  * `Range: bytes=N-` / `bytes=N-M` answered with 206 + Content-Range (RFC 9110 section 14),
    416 when N is past the end;
  * `--cut-after BYTES`: the FIRST request for each path that would send more than BYTES body bytes
    is cut after BYTES (Content-Length promises the full size, then the connection closes), to test
    that an interrupted download is kept and resumed. Later requests for that path are served fully.
Every request is logged to stderr with its Range header, so tests can assert a resume happened.
"""

import argparse
import http.server
import os
import re
import shutil
import socketserver
import sys
import threading

RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


class Handler(http.server.SimpleHTTPRequestHandler):
    cut_after = None
    cut_done = set()
    lock = threading.Lock()

    def log_message(self, format, *args):
        sys.stderr.write(
            "%s %s range=%s\n"
            % (self.log_date_time_string(), format % args, self.headers.get("Range", "-"))
        )
        sys.stderr.flush()

    def send_head(self):
        path = self.translate_path(self.path)
        if os.path.isdir(path) or "Range" not in self.headers:
            return super().send_head()
        m = RANGE_RE.match(self.headers["Range"].strip())
        if not m or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", "bytes */%d" % size)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        end = min(end, size - 1)
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile):
        limit = getattr(self, "_remaining", None)
        self._remaining = None
        path = self.translate_path(self.path)
        body = limit if limit is not None else (os.path.getsize(path) if os.path.isfile(path) else 0)
        cut = None
        if self.cut_after is not None and body > self.cut_after:
            with self.lock:
                if self.path not in self.cut_done:
                    self.cut_done.add(self.path)
                    cut = self.cut_after
        if cut is None and limit is None:
            shutil.copyfileobj(source, outputfile)
            return
        todo = cut if cut is not None else limit
        while todo > 0:
            chunk = source.read(min(64 * 1024, todo))
            if not chunk:
                break
            outputfile.write(chunk)
            todo -= len(chunk)
        if cut is not None:
            self.log_message("cut the body of %s after %d of %d bytes", self.path, cut, body)
            self.close_connection = True
            outputfile.flush()
            self.connection.shutdown(2)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--directory", required=True)
    ap.add_argument("--cut-after", type=int, default=None)
    ap.add_argument("port", type=int)
    a = ap.parse_args()
    os.chdir(a.directory)
    Handler.cut_after = a.cut_after
    with Server((a.bind, a.port), Handler) as httpd:
        httpd.serve_forever()


if __name__ == "__main__":
    main()
