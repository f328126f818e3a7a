#!/usr/bin/python3
"""A local stand-in for APNs' provider API, for passmill's push tests and bench.

Not Apple's service: it follows Apple's published protocol ("Sending
notification requests to APNs", "Handling notification responses from
APNs"): HTTP/2 over TLS 1.2+, the client certificate required and verified
against --client-ca, POST /3/device/<token>, the apns-topic header, JSON
answers {"reason": ...} with an apns-id header.  Checked on every request:
method, path, apns-topic (= --topic, and the certificate subject's UID),
apns-push-type (background), apns-priority (5 when given), the payload
(an empty JSON dictionary).  A request that breaks one is answered 400/403/
404/405 with Apple's reason and logged as "violation".

Answers by token prefix (tokens are hex, so are the prefixes):
  a410...   410 Unregistered
  a400...   400 BadDeviceToken
  a429N...  429 TooManyRequests (with retry-after: 1) for the first N tries, then 200
  a500N...  500 InternalServerError for the first N tries, then 200
  anything else 200
Every answer is one line in --log (.<process> appended): "<status> <token> <reason>";
a refused TLS handshake is a line "handshake <error>".  SIGTERM flushes and exits.

Needs Debian's python3-h2 (ops/install-deps).
"""
import argparse, json, os, signal, socket, ssl, sys, threading, time, uuid

import h2.config, h2.connection, h2.events

PREFIX = "/3/device/"


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1 << 16)
        self.lock = threading.Lock()

    def line(self, s):
        with self.lock:
            self.f.write(s + "\n")

    def flush(self):
        with self.lock:
            self.f.flush()


class Server:
    def __init__(self, args, log):
        self.args, self.log = args, log
        self.tries = {}
        self.lock = threading.Lock()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.cert, args.key)
        ctx.load_verify_locations(args.client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["h2"])
        self.ctx = ctx

    def attempt(self, token):
        with self.lock:
            n = self.tries.get(token, 0) + 1
            self.tries[token] = n
            return n

    def decide(self, method, path, headers, body, uid):
        """(status, reason or None) as APNs would answer."""
        if method != "POST":
            return 405, "MethodNotAllowed", True
        if not path.startswith(PREFIX) or len(path) == len(PREFIX) or "/" in path[len(PREFIX):]:
            return 404, "BadPath", True
        token = path[len(PREFIX):]
        topic = headers.get("apns-topic")
        if topic is None:
            return 400, "MissingTopic", True
        if topic != self.args.topic or uid != topic:
            return 400, "TopicDisallowed", True
        if headers.get("apns-push-type") != "background":
            return 400, "InvalidPushType", True
        if headers.get("apns-priority", "5") != "5":
            return 400, "BadPriority", True
        if not body:
            return 400, "PayloadEmpty", True
        try:
            if json.loads(body) != {}:
                return 400, "BadPayload", True  # not Apple's: Wallet's payload is {}
        except ValueError:
            return 400, "BadPayload", True
        if token.startswith("a410"):
            return 410, "Unregistered", False
        if token.startswith("a400"):
            return 400, "BadDeviceToken", False
        for prefix, status, reason in (("a429", 429, "TooManyRequests"), ("a500", 500, "InternalServerError")):
            if token.startswith(prefix):
                n = int(token[4]) if len(token) > 4 and token[4].isdigit() else 1
                if self.attempt(token) <= n:
                    return status, reason, False
        return 200, None, False

    def serve_conn(self, raw):
        try:
            sock = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.log.line("handshake %s" % str(e).replace("\n", " "))
            raw.close()
            return
        uid = None
        for rdn in (sock.getpeercert() or {}).get("subject", ()):
            for k, v in rdn:
                if k == "userId":
                    uid = v
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        streams = {}
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        streams[ev.stream_id] = [dict(ev.headers), b""]
                    elif isinstance(ev, h2.events.DataReceived):
                        if ev.stream_id in streams:
                            streams[ev.stream_id][1] += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        hdrs, body = streams.pop(ev.stream_id, ({}, b""))
                        self.answer(conn, ev.stream_id, hdrs, body, uid)
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            sock.close()

    def answer(self, conn, sid, hdrs, body, uid):
        path = hdrs.get(":path", "")
        status, reason, violation = self.decide(hdrs.get(":method"), path, hdrs, body, uid)
        token = path[len(PREFIX):] if path.startswith(PREFIX) else path
        apns_id = hdrs.get("apns-id") or str(uuid.uuid4()).upper()
        out = [(":status", str(status)), ("apns-id", apns_id)]
        payload = b""
        if reason:
            doc = {"reason": reason}
            if status == 410:
                doc["timestamp"] = int(time.time() * 1000)
            payload = json.dumps(doc).encode()
            out += [("content-type", "application/json"), ("content-length", str(len(payload)))]
            if status == 429:
                out.append(("retry-after", "1"))
        self.log.line("%d %s %s%s" % (status, token, reason or "-", " violation" if violation else ""))
        conn.send_headers(sid, out, end_stream=not payload)
        if payload:
            conn.send_data(sid, payload, end_stream=True)


def run(args, index, lsock):
    log = Log("%s.%d" % (args.log, index))
    srv = Server(args, log)

    def stop(*_):
        log.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    def flusher():
        while True:
            time.sleep(0.2)
            log.flush()
    threading.Thread(target=flusher, daemon=True).start()
    while True:
        raw, _ = lsock.accept()
        threading.Thread(target=srv.serve_conn, args=(raw,), daemon=True).start()


def listener(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cert", required=True, help="server certificate (PEM, for 127.0.0.1/localhost)")
    ap.add_argument("--key", required=True)
    ap.add_argument("--client-ca", required=True, help="CA the client certificate must chain to")
    ap.add_argument("--topic", required=True, help="the pass type identifier expected")
    ap.add_argument("--log", required=True)
    ap.add_argument("--port-file", required=True, help="the port is written here once listening")
    ap.add_argument("--processes", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    args = ap.parse_args()
    first = listener(0)
    port = first.getsockname()[1]
    children = []
    for i in range(1, args.processes):
        s = listener(port)
        pid = os.fork()
        if pid == 0:
            first.close()
            run(args, i, s)
        children.append(pid)
        s.close()

    def stop_all(*_):
        for c in children:
            try:
                os.kill(c, signal.SIGTERM)
            except OSError:
                pass
        for c in children:
            try:
                os.waitpid(c, 0)
            except OSError:
                pass
        raise SystemExit(0)

    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.rename(tmp, args.port_file)
    if children:
        pid = os.fork()
        if pid == 0:
            run(args, 0, first)
        children.append(pid)
        signal.signal(signal.SIGTERM, stop_all)
        while True:
            signal.pause()
    run(args, 0, first)


if __name__ == "__main__":
    import h2.settings, h2.exceptions  # noqa: E402
    main()
