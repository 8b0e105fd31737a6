"""A forwarding proxy in the style of the deployment guide: serves chat.html, forwards /v1/* upstream.

Usage: python proxy_server.py PORT UPSTREAM_URL DIRECTORY
Logs like the guide's proxy (Python logging defaults + http.server lines), answers CORS preflights.
"""

import http.server
import logging
import sys
import urllib.error
import urllib.request

logging.basicConfig(level=logging.INFO)
PORT, UPSTREAM, DIRECTORY = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3]


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=DIRECTORY, **k)

    def end_headers(self):
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def do_OPTIONS(self):
        self.send_response(204)
        self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "content-type, authorization")
        self.end_headers()

    def do_GET(self):
        logging.info("Received GET request to %s", self.path)
        if self.path.startswith("/v1/"):
            return self._forward(None)
        return super().do_GET()

    def do_POST(self):
        logging.info("Received POST request to %s", self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._forward(body)

    def _forward(self, body):
        url = UPSTREAM + self.path
        logging.info("Forwarding to %s", url)
        req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                data, status = r.read(), r.status
        except urllib.error.HTTPError as e:
            data, status = e.read(), e.code
        except Exception as e:  # noqa: BLE001
            logging.error("Upstream not reachable: %s", e)
            self.send_error(503, "Upstream not reachable")
            return
        logging.info("Upstream response status: %s", status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
